namespace Tibet.Core.Threading;

/// <summary>
/// One step of the busy waits around the fill worker (the handler waiting for the other
/// half of a run, the fill worker waiting for its next run before it sleeps): a pause loop
/// when the threads have CPUs of their own (<see cref="ServiceCpus"/>), else sched_yield.
/// </summary>
/// <remarks>
/// Why not always sched_yield: a thread that yields gives its CPU to whatever else is
/// runnable there, and llama.cpp's threads, which spin at their barriers, keep it for a
/// whole time slice (1.5–4 ms), while the fault or the run the yielder waits for is ready
/// (perf sched: the handler runnable but not running for 2–4 ms, both of the program's
/// threads waiting on it). Without a CPU of its own, spinning would keep the thread it
/// waits for from running on the same CPU: there, yielding is the right thing.
/// llama.cpp at half its model's budget, pinned, 7 interleaved runs: medians 44 tokens/s
/// pausing, 38 yielding (and 23 unpinned); the fill worker's 50 µs of waiting for the next
/// run before it sleeps is worth it (29 with none: waking it costs more). The handler's
/// own wait for the next message still yields: it comes between the program's faults,
/// when the program may want the CPU (Redis at half budget: GET 0.42x native with the
/// handler yielding, 0.27x pausing).
/// </remarks>
internal readonly struct IdleWait(bool ownsCpu)
{
    public void Step()
    {
        if (ownsCpu)
            Thread.SpinWait(20);
        else
            Thread.Yield();
    }
}
