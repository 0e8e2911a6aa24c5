using Tibet.Core.Paging;

namespace Tibet.IntegrationTests.Support;

/// <summary>
/// A test hook for the handler's windows without the engine lock
/// (EngineOptions.WhileOpeningWithoutLock and its kin): in each of the first
/// <paramref name="probes"/> windows it asks the engine for statistics from another thread,
/// as a program's thread may at any time, and counts the windows and the calls that did
/// not get the lock within 2 s (under the lock, every one would time out).
/// </summary>
internal sealed class LockProbe(int probes)
{
    private int _windows, _unanswered;
    private volatile bool _paused;

    /// <summary>The engine asked; set once it is created (the hook is given before).</summary>
    public PageEngine? Engine { get; set; }

    public int Windows => Volatile.Read(ref _windows);

    public int Unanswered => Volatile.Read(ref _unanswered);

    /// <summary>While set, windows are neither probed nor counted (work the test does not measure).</summary>
    public bool Paused
    {
        get => _paused;
        set => _paused = value;
    }

    public void Probe(Arena _)
    {
        if (_paused || Interlocked.Increment(ref _windows) > probes)
            return;
        var stats = Task.Run(() => Engine!.TryGetStats(TimeSpan.FromSeconds(2))).GetAwaiter().GetResult();
        if (stats == null)
            Interlocked.Increment(ref _unanswered);
    }
}
