namespace Tibet.EngineChild;

/// <summary>
/// A .NET heap full of secrets, for ReservationTests: the GC reserves its regions with
/// PROT_NONE and commits them with mprotect, which tibet serves as an arena. N arrays of
/// 8000 bytes (two pages each, so that a page holds at most one canary), each starting
/// with "TIBET-DOTNET-HEAP-CANARY:"; then "ready PID", and once stdin ends every array is
/// checked (the GC may have moved them, tibet sealed and brought them back): "heap ok N".
/// Nothing of tibet's runs in this mode: it is a plain .NET program.
/// </summary>
internal static class HeapCanary
{
    public static int Run(int count)
    {
        // Split, so that the canary exists only in the arrays made here (and this one).
        byte[] tag = System.Text.Encoding.ASCII.GetBytes("TIBET-DOTNET-" + "HEAP-CANARY:");
        var heap = new List<byte[]>(count);
        for (int i = 0; i < count; i++)
        {
            var array = new byte[8000];
            tag.CopyTo(array, 0);
            array[7999] = (byte)i;
            heap.Add(array);
        }
        Console.WriteLine($"ready {Environment.ProcessId}");
        Console.In.ReadToEnd();
        for (int i = 0; i < count; i++)
        {
            if (!heap[i].AsSpan(0, tag.Length).SequenceEqual(tag) || heap[i][7999] != (byte)i)
            {
                Console.WriteLine($"heap changed at array {i}");
                return 1;
            }
        }
        Console.WriteLine($"heap ok {count}");
        return 0;
    }
}
