using Tibet.Core.Interop;

namespace Tibet.Core.Threading;

/// <summary>
/// The CPUs an engine's handler and fill worker are pinned to (see
/// <see cref="Paging.EngineOptions.PinServiceThreads"/>), or -1 for both: left to the
/// scheduler.
/// </summary>
/// <remarks>
/// <para>Why: the two share every long run (a 2 MiB model range: 256 decryptions each) and
/// wait for each other at its end. Left to the scheduler on a 2-vCPU machine, they were
/// seen queued on one CPU, taking turns through sched_yield while the other CPU idled; and
/// llama.cpp's two threads, which spin at their barriers, queued together on one CPU too,
/// each spinning a whole 4 ms tick while the other could not run (perf sched: 4-13 ms
/// faults). Pinned to two different CPUs, each always has a CPU of its own to run on.
/// llama.cpp at half its model's budget: 42-54 tokens/s pinned, 21-50 not (medians 49
/// and 33); Redis at half budget unchanged (bench/results whole-ranges).</para>
/// <para>Chosen from the creating thread's allowed CPUs (taskset, cgroups), starting with
/// the CPU it runs on, so that the engines of several processes spread, and one further
/// for each engine a process has created before (the custodian serves every process of
/// the tree with an engine of its own: their handlers must not all share one CPU).
/// Nothing is pinned where the thread may use fewer than two CPUs.</para>
/// </remarks>
internal readonly record struct ServiceCpus(int Handler, int Fill)
{
    private const int MaskWords = 16; // 1024 CPUs, glibc's cpu_set_t

    public static ServiceCpus None => new(-1, -1);

    // Engines this process has pinned threads for: each starts one allowed CPU further.
    private static int s_chosen;

    /// <summary>Two different CPUs of the calling thread's allowed set: the one it runs on
    /// (the handler's) and the next allowed one after it (the fill worker's).</summary>
    public static unsafe ServiceCpus Choose()
    {
        ulong* mask = stackalloc ulong[MaskWords];
        if (Libc.sched_getaffinity(0, MaskWords * sizeof(ulong), mask) != 0)
            return None;
        // Binds sched_setaffinity here (its first call resolves the symbol, and that may
        // call malloc), not on the handler's thread: setting the mask it has changes nothing.
        Libc.sched_setaffinity(0, MaskWords * sizeof(ulong), mask);
        int allowed = 0;
        for (int cpu = 0; cpu < MaskWords * 64; cpu++)
            if (Allowed(mask, cpu))
                allowed++;
        if (allowed < 2)
            return None;
        int handler = Libc.sched_getcpu();
        if (handler < 0 || handler >= MaskWords * 64 || !Allowed(mask, handler))
            handler = Next(mask, -1);
        for (int before = (Interlocked.Increment(ref s_chosen) - 1) % allowed; before > 0; before--)
            handler = Next(mask, handler);
        return new ServiceCpus(handler, Next(mask, handler));
    }

    /// <summary>Pins the calling thread to <paramref name="cpu"/> (nothing for -1). A
    /// refusal (the CPU went offline, a cgroup changed) leaves it where it was.</summary>
    public static unsafe void PinCurrentThread(int cpu)
    {
        if (cpu < 0)
            return;
        ulong* mask = stackalloc ulong[MaskWords];
        for (int i = 0; i < MaskWords; i++)
            mask[i] = 0;
        mask[cpu / 64] = 1UL << (cpu % 64);
        Libc.sched_setaffinity(0, MaskWords * sizeof(ulong), mask);
    }

    private static unsafe bool Allowed(ulong* mask, int cpu) => (mask[cpu / 64] & (1UL << (cpu % 64))) != 0;

    /// <summary>The next allowed CPU after <paramref name="cpu"/>, wrapping around.</summary>
    private static unsafe int Next(ulong* mask, int cpu)
    {
        for (int step = 1; step <= MaskWords * 64; step++)
        {
            int candidate = (cpu + step) % (MaskWords * 64);
            if (Allowed(mask, candidate))
                return candidate;
        }
        return -1;
    }
}
