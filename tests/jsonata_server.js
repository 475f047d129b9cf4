// The reference JSONata engine (npm `jsonata`, pinned in package.json) as a line-oriented server
// for the Python tests: one JSON request per line on stdin, one JSON response per line on stdout.
// Request: {"expression": str, "bindings": {name: value}}. Response: {"value": ...} (absent when
// the result is undefined) or {"error": message, "code": code}.
"use strict";
const jsonata = require("jsonata");
const readline = require("readline");

const lines = readline.createInterface({ input: process.stdin, terminal: false });
let queue = Promise.resolve();
lines.on("line", (line) => {
  queue = queue.then(async () => {
    let response;
    try {
      const request = JSON.parse(line);
      const value = await jsonata(request.expression).evaluate({}, request.bindings || {});
      response = value === undefined ? {} : { value };
    } catch (error) {
      response = { error: String(error && error.message ? error.message : error), code: error && error.code };
    }
    process.stdout.write(JSON.stringify(response) + "\n");
  });
});
