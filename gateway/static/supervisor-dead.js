// The console's dead tab (see supervisor.js for Console.tab).
"use strict";
