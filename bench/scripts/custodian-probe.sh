#!/usr/bin/env bash
# The mechanism under issue 12's custodian, measured before it is built: page faults served
# by a handler thread in the process against a custodian process that received the
# userfaultfd over a unix socket, and eviction in-process (UFFDIO_MOVE into a scratch area,
# what the engine does today) against the custodian's way (write-protect, process_vm_readv,
# MADV_DONTNEED by an agent thread in the served process, whose REMOVE event the custodian
# reads), at several eviction step sizes. Every page is read back and checked after eviction.
# No cipher: the mechanism alone (bench/native/custodian_probe.c says what each phase does).
# Writes PREFIX.json, PREFIX.md and PREFIX.png (gnuplot).
# Usage: bench/scripts/custodian-probe.sh bench/results/$(date +%F)-custodian-probe
# Environment: TIBET_BENCH_MIB (arena size, default 256), TIBET_BENCH_STEPS (pages per
#              eviction step, default "16 64 512").
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=${1:?usage: custodian-probe.sh OUTPUT-PREFIX}
mib=${TIBET_BENCH_MIB:-256}
steps=${TIBET_BENCH_STEPS:-16 64 512}
for tool in gcc gnuplot python3; do
  command -v $tool >/dev/null || { echo "custodian-probe.sh: $tool is missing (apt-get install gcc gnuplot-nox python3)" >&2; exit 1; }
done
headers=.tools/linux-headers/usr/include
[ -f $headers/linux/userfaultfd.h ] || { echo "custodian-probe.sh: Linux 6.8+ UAPI headers are missing: run scripts/install-deps.sh" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "custodian-probe.sh: must run as root (userfaultfd for anonymous memory, process_vm_readv)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -Wall -Wextra -isystem $headers -o "$work/probe" bench/native/custodian_probe.c -lpthread
for step in $steps; do
  "$work/probe" "$mib" "$step" > "$work/step-$step.json" \
    || { echo "custodian-probe.sh: the probe failed at $step pages per step" >&2; exit 1; }
done

python3 - "$prefix" "$work" "$mib" $steps <<'PY'
import json, platform, subprocess, sys, datetime
prefix, work, mib, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(s) for s in sys.argv[4:]]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
rows = [json.load(open(f"{work}/step-{s}.json")) for s in steps]
doc = {"benchmark": "custodian-probe", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "machine": {"cpu": cpu, "cpus": subprocess.check_output(["nproc"], text=True).strip(), "kernel": platform.release()},
       "command": f"bench/scripts/custodian-probe.sh (TIBET_BENCH_MIB={mib})", "arenaMiB": mib, "steps": rows}
json.dump(doc, open(prefix + ".json", "w"), indent=1)
lines = [f"# Custodian probe: faults and eviction from another process, {doc['date'][:10]}", "",
         f"Machine: {cpu}, {doc['machine']['cpus']} CPUs, Linux {doc['machine']['kernel']}. Arena {mib} MiB of 4 KiB pages, no cipher.", "",
         "| pages per eviction step | serve in-process µs/page | serve from custodian µs/page | evict in-process µs/page | evict from custodian µs/page | of which write-protect | process_vm_readv | agent zap + REMOVE event | UFFDIO_MOVE from the custodian |",
         "|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
for r in rows:
    i, c, s = r["inProcess"], r["custodian"], r["custodian"]["evictSplitUsPerPage"]
    lines.append(f"| {r['batchPages']} | {i['serveUsPerPage']:.2f} | {c['serveUsPerPage']:.2f} | {i['evictUsPerPage']:.2f} | {c['evictUsPerPage']:.2f} | {s['writeProtect']:.2f} | {s['processVmReadv']:.2f} | {s['agentZapWithRemoveEvent']:.2f} | {c['crossProcessMoveErrno']} |")
lines += ["", "Serving is one page per fault with a handler that sleeps in poll between faults (the engine spins instead), in both columns alike.",
          "Every page was read back exact after eviction, in both modes."]
open(prefix + ".md", "w").write("\n".join(lines) + "\n")
with open(f"{work}/plot.dat", "w") as f:
    for r in rows:
        f.write(f"{r['batchPages']} {r['inProcess']['evictUsPerPage']} {r['custodian']['evictUsPerPage']}\n")
PY
gnuplot <<GP
set terminal pngcairo size 900,500 noenhanced
set output "$prefix.png"
set title "Eviction cost per page, in-process against from a custodian process"
set xlabel "pages per eviction step"
set ylabel "µs per page"
set logscale x 2
set yrange [0:*]
set key top right
set grid
plot "$work/plot.dat" using 1:2 with linespoints title "in-process (UFFDIO_MOVE, wipe, MADV_DONTNEED)", \
     "$work/plot.dat" using 1:3 with linespoints title "custodian (WRITEPROTECT, process_vm_readv, agent MADV_DONTNEED)"
GP
cat "$prefix.md"
