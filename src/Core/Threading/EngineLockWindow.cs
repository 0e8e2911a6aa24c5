using System.Diagnostics;

namespace Tibet.Core.Threading;

/// <summary>
/// The engine lock as the handler lets go of it in the middle of a step, around a file
/// read, a decryption or an eviction's sealing (Faults.UnlockedOpener, Faults.RangePlacer,
/// Sealing.UnlockedSealer), so that the program's threads that map or unmap
/// meanwhile do not wait for it. Whoever takes the lock in such a window sees
/// the handler's step half done (pages taken out and not yet sealed, a staging slot being
/// filled): <see cref="IsOpen"/> says so, for callers that want the engine between steps
/// (PageEngine.EnterBetweenSteps: evictions an API call asks for, and the statistics and
/// other observers, which would otherwise count pages installed and not yet admitted).
/// </summary>
/// <remarks>Such a caller announces itself (<see cref="RequestBetweenSteps"/>), and the
/// handler opens no new window of cryptography while one waits (<see cref="MayLetGo"/>):
/// with a window in every fault, a caller that found the lock inside one and tried again
/// later could otherwise wait for as long as the program faults. One window is opened
/// regardless: the handler's wait for the fill worker's part of a run it started without
/// the lock (the worker needs the lock to install), which ends with that run.</remarks>
internal sealed class EngineLockWindow(Lock engineLock)
{
    // Changed under the lock only: read under it, it says whether the handler is away.
    private int _open;
    // Threads waiting to take the lock between the handler's steps.
    private int _waitingBetweenSteps;

    /// <summary>Whether the handler has let go of the lock mid-step: read under the lock.</summary>
    public bool IsOpen => _open != 0;

    public bool IsHeldByCurrentThread => engineLock.IsHeldByCurrentThread;

    /// <summary>Whether the handler may open a window of cryptography now: no thread waits
    /// to take the lock between its steps. Otherwise it does the work under the lock.</summary>
    public bool MayLetGo => Volatile.Read(ref _waitingBetweenSteps) == 0;

    /// <summary>A thread starts waiting to take the lock between the handler's steps; it
    /// calls <see cref="EndRequest"/> once it has (or gives up).</summary>
    public void RequestBetweenSteps() => Interlocked.Increment(ref _waitingBetweenSteps);

    public void EndRequest() => Interlocked.Decrement(ref _waitingBetweenSteps);

    /// <summary>Lets go of the lock, which the caller holds (once).</summary>
    public void LetGo()
    {
        Debug.Assert(engineLock.IsHeldByCurrentThread);
        _open++;
        engineLock.Exit();
        // Held twice, it would still be held here, and a fill worker waiting for it to
        // install its slices would never come (FaultService.FillAndInject waits for it).
        Debug.Assert(!engineLock.IsHeldByCurrentThread, "the engine lock let go while held twice");
    }

    /// <summary>Takes the lock again after <see cref="LetGo"/>.</summary>
    public void TakeBack()
    {
        engineLock.Enter();
        _open--;
    }

    /// <summary>Takes the lock on a thread that works beside the handler while the handler
    /// has let go of it (the fill worker installing its part of a run: Faults.FillWorker),
    /// for as long as the scope lives. It leaves <see cref="IsOpen"/> as it is: the
    /// handler's step is still half done.</summary>
    public Lock.Scope EnterBesideHandler()
    {
        return engineLock.EnterScope();
    }
}
