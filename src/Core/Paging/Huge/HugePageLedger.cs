using System.Globalization;
using System.Text;
using Tibet.Core.Interop;

namespace Tibet.Core.Paging.Huge;

/// <summary>
/// The machine's record of what tibet's runs hold of the hugetlb pool: per owner (the
/// process whose life a reservation lasts: the program, or a test process), the pages it
/// reserved and the pages it added to the pool; and the pages owed back to the kernel by
/// owners that ended while others still ran. A text file that only root writes
/// (<see cref="DefaultPath"/>), changed under an exclusive flock.
/// </summary>
/// <remarks>
/// Why: a run's custodian gave the pages its run had added back when it ended, and
/// shrinking the pool then took free pages that the next run, started meanwhile, had
/// counted as its own (back-to-back runs of bench/scripts/llama-budget.sh: EEXIST in the
/// next run's handler, then SIGBUS). Now pages go back to the kernel only when no other
/// owner is alive, and a reservation counts the pages other live owners reserved and have
/// not taken from the pool yet as taken.
/// </remarks>
internal sealed class HugePageLedger : IDisposable
{
    public const string DefaultPath = "/run/tibet/hugepages.ledger";

    private readonly FileStream _file;

    /// <summary>A live owner's reservations: pages reserved and pages added to the pool, in all.</summary>
    public record struct Entry(long Reserved, long Added, int Reservations);

    /// <summary>Pages tibet added to the pool whose owners have ended, given back once no owner lives.</summary>
    public long Owed { get; set; }

    public Dictionary<int, Entry> Owners { get; } = [];

    private HugePageLedger(FileStream file) => _file = file;

    /// <summary>Opens the ledger and locks it until disposed; owners that have ended are
    /// dropped (their added pages become owed). Null when it cannot be opened (not root: a
    /// process that cannot grow the pool adds no pages to account for).</summary>
    public static HugePageLedger? Open(string path = DefaultPath)
    {
        if (!OperatingSystem.IsLinux())
            return null;
        FileStream file;
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            file = new FileStream(path, new FileStreamOptions
            {
                Mode = FileMode.OpenOrCreate,
                Access = FileAccess.ReadWrite,
                Share = FileShare.ReadWrite, // the lock is flock's, below
                UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
            });
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
        if (Libc.flock((int)file.SafeFileHandle.DangerousGetHandle(), Libc.LOCK_EX) != 0)
        {
            file.Dispose();
            return null;
        }
        var ledger = new HugePageLedger(file);
        ledger.Read();
        return ledger;
    }

    /// <summary>Pages other live owners reserved, in all.</summary>
    public long ReservedByOthers(int owner) => Owners.Where(o => o.Key != owner).Sum(o => o.Value.Reserved);

    /// <summary>Writes the ledger back (the lock is still held).</summary>
    public void Save()
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"owed {Owed}\n");
        foreach (var (pid, entry) in Owners)
            text.Append(CultureInfo.InvariantCulture, $"{pid} {entry.Reserved} {entry.Added} {entry.Reservations}\n");
        byte[] bytes = Encoding.ASCII.GetBytes(text.ToString());
        _file.SetLength(0);
        _file.Position = 0;
        _file.Write(bytes);
        _file.Flush(flushToDisk: false);
    }

    /// <summary>Closes the file, which lets the lock go.</summary>
    public void Dispose() => _file.Dispose();

    /// <summary>Reads the file; a line it cannot parse (a file someone edited) is dropped,
    /// so at worst pages stay in the pool, never go back under a live run.</summary>
    private void Read()
    {
        _file.Position = 0;
        using var reader = new StreamReader(_file, Encoding.ASCII, detectEncodingFromByteOrderMarks: false, leaveOpen: true);
        while (reader.ReadLine() is { } line)
        {
            string[] words = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (words is ["owed", var owed] && long.TryParse(owed, NumberStyles.None, CultureInfo.InvariantCulture, out long pages))
                Owed = pages;
            else if (words.Length == 4
                     && int.TryParse(words[0], NumberStyles.None, CultureInfo.InvariantCulture, out int pid)
                     && long.TryParse(words[1], NumberStyles.None, CultureInfo.InvariantCulture, out long reserved)
                     && long.TryParse(words[2], NumberStyles.None, CultureInfo.InvariantCulture, out long added)
                     && int.TryParse(words[3], NumberStyles.None, CultureInfo.InvariantCulture, out int reservations))
            {
                if (IsAlive(pid))
                    Owners[pid] = new Entry(reserved, added, reservations);
                else
                    Owed += added; // ended without giving back (killed): owed now
            }
        }
    }

    private static bool IsAlive(int pid) => pid > 0 && (Libc.kill(pid, 0) == 0 || Libc.LastErrno == Libc.EPERM);
}
