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
            ulong childCount, childBytes, childRefused, fixedCount, fixedBytes, fixedRefused;
            Shim.ChildPlaintext(&childCount, &childBytes, &childRefused);
            Shim.ChildFixed(&fixedCount, &fixedBytes, &fixedRefused);
            foreach (var count in PlaintextFallbacks.Snapshot())
            {
                w.WriteStartObject(count.Name);
                if (count.Reason == PlaintextReason.FixedAddress)
                {
                    // Forked children's are counted by the shim (this process's here).
                    w.WriteNumber("count", count.Count + (long)Math.Min(fixedCount, long.MaxValue));
                    w.WriteNumber("bytes", count.Bytes + (long)Math.Min(fixedBytes, long.MaxValue));
                    w.WriteNumber("refused", count.Refused + (long)Math.Min(fixedRefused, long.MaxValue));
                }
                else if (count.Reason == PlaintextReason.ForkedChild)
                {
                    // The children's calls are counted by the shim, never in managed code.
                    w.WriteNumber("count", count.Count + (long)Math.Min(childCount, long.MaxValue));
                    w.WriteNumber("bytes", count.Bytes + (long)Math.Min(childBytes, long.MaxValue));
                    w.WriteNumber("refused", count.Refused + (long)Math.Min(childRefused, long.MaxValue));
                }
                else
                {
                    w.WriteNumber("count", count.Count);
                    w.WriteNumber("bytes", count.Bytes);
                    w.WriteNumber("refused", count.Refused);
                }
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
