using Tibet.Core.Interop;

namespace Tibet.Core.Threading;

/// <summary>
/// The CPUs an engine's handlers and fill worker are pinned to (see
/// <see cref="Paging.EngineOptions.PinServiceThreads"/> and
/// <see cref="Paging.EngineOptions.HandlerPerCpu"/>), or none: left to the scheduler.
/// </summary>
/// <remarks>
/// <para><b>A handler per CPU.</b> The serving handler is passed to the CPU the faults come
/// from (PageEngine.ConsiderHandover); a thread that faults then wakes the handler pinned
/// to its own CPU, which runs as soon as that thread sleeps, with no interrupt to another CPU, which on these VMs may have to be woken from
/// a halt, and the page tables it changes are the ones that CPU has loaded. A single
/// thread touching random pages of a 64 MiB map under an 8M budget (AMD EPYC, 2 vCPU), its
/// handler pinned to its CPU against the other one: p50 15–17 µs against 31–36 µs, 63–70k
/// touches/s against 26–29k with the program's own engine; 12 µs against 22–23 µs with the
/// custodian. Only one handler serves at a time (PageEngine's baton), so the rest of the
/// engine still sees one handler. Up to <see cref="MaxHandlers"/> CPUs: beyond, a handler
/// would only pay off for the few threads that share its CPU, and every engine of the
/// custodian has its own.</para>
/// <para><b>The fill worker</b> shares every long run (a 2 MiB model range: 256 decryptions
/// each) with the serving handler and waits for it at the run's end, so it runs on another
/// CPU than that handler: when a handler on the worker's CPU takes the baton, the worker is
/// moved to the CPU after it (<see cref="PartnerOf"/>). Left to the scheduler on a 2-vCPU
/// machine, the two were seen queued on one CPU, taking turns through sched_yield while the
/// other CPU idled; and llama.cpp's two threads, which spin at their barriers, queued
/// together on one CPU too, each spinning a whole 4 ms tick while the other could not run
/// (perf sched: 4-13 ms faults). llama.cpp at half its model's budget: 42-54 tokens/s
/// pinned, 21-50 not (medians 49 and 33); Redis at half budget unchanged (bench/results
/// whole-ranges).</para>
/// <para>Chosen from the creating thread's allowed CPUs (taskset, cgroups). With a single
/// handler (more allowed CPUs than <see cref="MaxHandlers"/>, or HandlerPerCpu off), it
/// starts with the CPU the creator runs on, and one further for each engine a process has
/// created before (the custodian serves every process of the tree with an engine of its
/// own: their handlers must not all share one CPU). Nothing is pinned where the thread may
/// use fewer than two CPUs.</para>
/// </remarks>
internal sealed class ServiceCpus
{
    private const int MaskWords = 16; // 1024 CPUs, glibc's cpu_set_t

    /// <summary>The most CPUs that get a handler each (HandlerPerCpu).</summary>
    public const int MaxHandlers = 8;

    // Engines this process has pinned threads for: each starts one allowed CPU further.
    private static int s_chosen;

    private readonly int[] _handlers;
    private readonly int[] _partners;

    private ServiceCpus(int[] handlers, int[] partners, int fill)
    {
        _handlers = handlers;
        _partners = partners;
        Fill = fill;
    }

    /// <summary>One handler, nothing pinned.</summary>
    public static ServiceCpus None { get; } = new([-1], [-1], -1);

    /// <summary>How many handler threads the engine runs.</summary>
    public int HandlerCount => _handlers.Length;

    /// <summary>The CPU handler <paramref name="index"/> is pinned to, or -1.</summary>
    public int Handler(int index) => _handlers[index];

    /// <summary>The CPU the fill worker starts on, or -1.</summary>
    public int Fill { get; }

    /// <summary>Where the fill worker goes while handler <paramref name="index"/> serves, if
    /// it is on that handler's CPU: the next allowed CPU (-1: nothing pinned).</summary>
    public int PartnerOf(int index) => _partners[index];

    /// <summary>The CPUs for an engine created on the calling thread: a handler on each of
    /// its allowed CPUs when <paramref name="handlerPerCpu"/> and there are at most
    /// <see cref="MaxHandlers"/>, else one; the fill worker on the CPU after the first.</summary>
    public static unsafe ServiceCpus Choose(bool handlerPerCpu)
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
        if (handlerPerCpu && allowed <= MaxHandlers)
        {
            var handlers = new int[allowed];
            var partners = new int[allowed];
            int cpu = -1;
            for (int i = 0; i < allowed; i++)
            {
                cpu = Next(mask, cpu);
                handlers[i] = cpu;
                partners[i] = Next(mask, cpu);
            }
            return new ServiceCpus(handlers, partners, partners[0]);
        }
        int handler = Libc.sched_getcpu();
        if (handler < 0 || handler >= MaskWords * 64 || !Allowed(mask, handler))
            handler = Next(mask, -1);
        for (int before = (Interlocked.Increment(ref s_chosen) - 1) % allowed; before > 0; before--)
            handler = Next(mask, handler);
        int fill = Next(mask, handler);
        return new ServiceCpus([handler], [fill], fill);
    }

    /// <summary>Pins the calling thread to <paramref name="cpu"/> (nothing for -1). A
    /// refusal (the CPU went offline, a cgroup changed) leaves it where it was.</summary>
    public static void PinCurrentThread(int cpu) => PinThread(0, cpu);

    /// <summary>Pins thread <paramref name="tid"/> of this process (0: the caller) to
    /// <paramref name="cpu"/> (nothing for -1); false if refused. Allocation-free.</summary>
    public static bool PinThread(int tid, int cpu) => HoldThread(tid, cpu);

    /// <summary>Holds thread <paramref name="tid"/> of this process (0: the caller) to
    /// <paramref name="cpus"/>; false if refused, or if there is none or one is not a CPU
    /// number (-1: nothing pinned). Allocation-free.</summary>
    public static unsafe bool HoldThread(int tid, params ReadOnlySpan<int> cpus)
    {
        ulong* mask = stackalloc ulong[MaskWords];
        for (int i = 0; i < MaskWords; i++)
            mask[i] = 0;
        foreach (int cpu in cpus)
        {
            if (cpu is < 0 or >= MaskWords * 64)
                return false;
            mask[cpu / 64] |= 1UL << (cpu % 64);
        }
        return cpus.Length > 0 && Libc.sched_setaffinity(tid, MaskWords * sizeof(ulong), mask) == 0;
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
