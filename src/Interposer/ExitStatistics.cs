using System.Text;
using System.Text.Json;
using Tibet.Core.Diagnostics;
using Tibet.Core.Interop;
using Tibet.Interposer.Native;

namespace Tibet.Interposer;

/// <summary>
/// The statistics a process writes at exit (tibet-run --stats and --stats-json read them):
/// the engine's counters when it ran, and always what ran unencrypted and why.
/// </summary>
/// <remarks>
/// The "unencrypted" object is the record of every case <see cref="PlaintextFallbacks"/>
/// counted, one entry per reason with zeros included, so that a reader can tell "nothing
/// fell back" from "not measured". Forked children count into a page they share with this
/// process (the shim's), so their entry holds what children that ended before this process
/// allocated; a daemon's child that outlives the parent is announced on stderr, and is not
/// in this file.
/// </remarks>
internal static unsafe class ExitStatistics
{
    public static string ToJson(EngineStats? engine, PlaintextReason? wholeProcessReason, Tibet.Core.Paging.Huge.HugePageStats? hugePages = null)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteBoolean("encrypted", engine != null);
            engine?.WriteProperties(w);
            if (hugePages is { } huge)
            {
                w.WriteStartObject("hugePages");
                huge.WriteProperties(w);
                w.WriteEndObject();
            }

            w.WriteStartObject("unencrypted");
            if (wholeProcessReason is { } whole)
                w.WriteString("wholeProcess", PlaintextFallbacks.Name(whole));
            else
                w.WriteNull("wholeProcess");
            foreach (var count in PlaintextFallbacks.Snapshot())
            {
                // Forked children run no managed code: the shim counts what they do, into a
                // page this process reads; this process's own are counted here.
                ulong childCount = 0, childBytes = 0, childRefused = 0;
                int childKind = count.Reason switch
                {
                    PlaintextReason.ForkedChild => Shim.ChildAllocations,
                    PlaintextReason.FixedAddress => Shim.ChildFixedMaps,
                    _ => -1,
                };
                if (childKind >= 0)
                    Shim.ChildTally(childKind, &childCount, &childBytes, &childRefused);
                w.WriteStartObject(count.Name);
                w.WriteNumber("count", count.Count + (long)Math.Min(childCount, long.MaxValue));
                w.WriteNumber("bytes", count.Bytes + (long)Math.Min(childBytes, long.MaxValue));
                w.WriteNumber("refused", count.Refused + (long)Math.Min(childRefused, long.MaxValue));
                w.WriteEndObject();
            }
            w.WriteEndObject();

            w.WriteStartObject("memoryLocking");
            w.WriteNumber("failures", MemoryLocking.Failures);
            w.WriteNumber("unlockedBytes", MemoryLocking.UnlockedBytes);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }
}
