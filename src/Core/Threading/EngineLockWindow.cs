using System.Diagnostics;

namespace Tibet.Core.Threading;

/// <summary>
/// The engine lock as the handler lets go of it in the middle of a step, around a file
/// read or a decryption (Faults.FaultService.OpenWithoutLock, Faults.RangePlacer), so that
/// the program's threads that map, unmap, evict or ask for statistics meanwhile do not
/// wait for it. Whoever takes the lock in such a window sees the handler's step half done
/// (a range taken out and not yet given back, a staging slot being filled): <see cref="IsOpen"/>
/// says so, for observers that want a picture between steps (PageEngine.ObserveUnderLock).
/// </summary>
internal sealed class EngineLockWindow(Lock engineLock)
{
    // Changed under the lock only: read under it, it says whether the handler is away.
    private int _open;

    /// <summary>Whether the handler has let go of the lock mid-step: read under the lock.</summary>
    public bool IsOpen => _open != 0;

    public bool IsHeldByCurrentThread => engineLock.IsHeldByCurrentThread;

    /// <summary>Lets go of the lock, which the caller holds (once).</summary>
    public void LetGo()
    {
        Debug.Assert(engineLock.IsHeldByCurrentThread);
        _open++;
        engineLock.Exit();
    }

    /// <summary>Takes the lock again after <see cref="LetGo"/>.</summary>
    public void TakeBack()
    {
        engineLock.Enter();
        _open--;
    }
}
