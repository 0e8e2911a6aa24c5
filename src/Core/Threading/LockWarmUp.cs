namespace Tibet.Core.Threading;

/// <summary>Makes a lock's first contention happen at start-up, not on a fault path.</summary>
internal static class LockWarmUp
{
    /// <summary>
    /// System.Threading.Lock creates its wait object (a managed object over a malloc'ed
    /// pthread condition) the first time a thread has to wait for it. Make that happen
    /// here, on the constructing thread, rather than on a handler thread when an API call
    /// first collides with it (the handler must not allocate, nor call malloc).
    /// </summary>
    public static void ForceContention(Lock gate)
    {
        using var held = new ManualResetEventSlim();
        var contender = new Thread(() =>
        {
            held.Wait();
            lock (gate) { }
        });
        lock (gate)
        {
            contender.Start();
            held.Set();
            // Wait until the contender is blocked on the lock (or give up after 1 s; the
            // cost is then only a later allocation, never a fault).
            for (int i = 0; i < 1000 && contender.ThreadState != ThreadState.WaitSleepJoin; i++)
                Thread.Sleep(1);
            Thread.Sleep(1);
        }
        contender.Join();
    }
}
