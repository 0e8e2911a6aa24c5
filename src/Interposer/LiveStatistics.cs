using Tibet.Core.Diagnostics;

namespace Tibet.Interposer;

/// <summary>
/// This process's statistics while it runs, for <c>tibet stats</c> and
/// <c>tibet-run --metrics</c>: the JSON the process writes at exit
/// (<see cref="ExitStatistics"/>), forked children included, served on
/// <c>tibet-stats-PID</c> (see <see cref="LiveStatsServer"/>). Forked children do not have
/// the thread (threads do not survive fork): their figures are in their parent's answer,
/// and in the custodian's for what it serves them.
/// </summary>
internal static class LiveStatistics
{
    public static void Start(Func<string> snapshot) => LiveStatsServer.Start(snapshot, Native.Shim.WriteError);
}
