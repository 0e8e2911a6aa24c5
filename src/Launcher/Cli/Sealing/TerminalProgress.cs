using System.Diagnostics;

namespace Tibet.Cli.Sealing;

/// <summary>
/// A one-line progress bar on stderr, redrawn at most ten times a second; silent when
/// stderr is not a terminal, so logs and pipes get only the final summary.
/// </summary>
internal sealed class TerminalProgress : IProgress<long>, IDisposable
{
    private const int BarWidth = 30;
    private static readonly TimeSpan RedrawInterval = TimeSpan.FromMilliseconds(100);

    private readonly string _verb;
    private readonly long _total;
    private readonly bool _enabled = !Console.IsErrorRedirected;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private TimeSpan _nextDraw = TimeSpan.Zero;
    private int _drawnLength;

    /// <param name="verb">"sealing", "unsealing".</param>
    /// <param name="total">The value the reports end at.</param>
    public TerminalProgress(string verb, long total)
    {
        _verb = verb;
        _total = Math.Max(total, 1);
    }

    public void Report(long value)
    {
        if (!_enabled || (_clock.Elapsed < _nextDraw && value < _total))
            return;
        _nextDraw = _clock.Elapsed + RedrawInterval;
        double fraction = Math.Clamp((double)value / _total, 0, 1);
        int filled = (int)(fraction * BarWidth);
        string line = $"{_verb} [{new string('#', filled)}{new string('.', BarWidth - filled)}] {fraction * 100,3:F0}%  " +
                      $"{SealingConsole.Megabytes(value)} of {SealingConsole.Megabytes(_total)}  {SealingConsole.Rate(value, _clock.Elapsed)}";
        Console.Error.Write("\r" + line.PadRight(_drawnLength));
        _drawnLength = line.Length;
    }

    /// <summary>Erases the bar, so that the summary that follows starts on a clean line.</summary>
    public void Dispose()
    {
        if (_enabled && _drawnLength > 0)
            Console.Error.Write("\r" + new string(' ', _drawnLength) + "\r");
    }
}
