using Tibet.Core.Paging;

namespace Tibet.IntegrationTests.Support;

/// <summary>
/// A test hook for the handler's windows without the engine lock
/// (EngineOptions.WhileOpeningWithoutLock and its kin): in each of the first
/// <paramref name="probes"/> windows it asks the engine, from another thread, how many of
/// the arena's pages are still mapped, as the interposer's munmap does at any time of the
/// program's, and counts the windows and the calls that did not get the lock within 2 s
/// (under the lock, every one would time out). Not the statistics: those wait for the
/// handler's step to end, so as not to count pages installed and not yet admitted.
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

    public void Probe(Arena arena)
    {
        if (_paused || Interlocked.Increment(ref _windows) > probes)
            return;
        var asked = Task.Run(() => Engine!.MappedPageCount(arena, 0, count: -1));
        if (!asked.Wait(TimeSpan.FromSeconds(2)))
            Interlocked.Increment(ref _unanswered);
    }
}
