// A V8 heap full of secrets: N strings of 4100 one-byte characters (so that a page holds
// at most one canary), each starting with "TIBET-NODE-HEAP-CANARY:" and its index. Prints
// "ready <pid>", waits until stdin ends (the test scans the process's present pages
// meanwhile), then checks every string (the garbage collector may have moved them, and
// tibet may have sealed and brought them back) and prints "heap ok N".
// Usage: node heap_canary.js N
"use strict";
const count = Number(process.argv[2]);
// The canary is joined at run time from two halves, so that it exists only in the
// strings made here (not in this source, which V8 keeps in its heap, nor in a constant).
const halves = ["TIBET-NODE-", "HEAP-CANARY:"];
function mark(i) {
    const s = (halves[0] + halves[1] + String(i).padStart(8, "0")).padEnd(4100, "x");
    s.charCodeAt(4000); // flattens the rope in place: one flat string holds the canary
    return s;
}
const heap = [];
for (let i = 0; i < count; i++) heap.push(mark(i));
console.log("ready " + process.pid);
process.stdin.resume();
process.stdin.on("end", () => {
    for (let i = 0; i < count; i++)
        if (heap[i] !== mark(i)) {
            console.log("heap changed at string " + i);
            process.exit(1);
        }
    console.log("heap ok " + count);
    process.exit(0);
});
