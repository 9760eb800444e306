// The console's province tab (see supervisor.js for Console.tab).
"use strict";
