// The console's reports tab (see supervisor.js for Console.tab).
"use strict";
