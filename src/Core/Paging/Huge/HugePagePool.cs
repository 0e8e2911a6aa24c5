using System.Globalization;
using Tibet.Core.Interop;
using Tibet.Core.Storage;

namespace Tibet.Core.Paging.Huge;

/// <summary>
/// The kernel's pool of 2 MiB pages (vm.nr_hugepages). A <see cref="HugePageService"/>
/// takes its pages from it, so the pool must hold the budget before the program starts;
/// tibet-run (as root) grows it for the run and shrinks it back afterwards, as far as no
/// other run still needs the pages (see <see cref="HugePageLedger"/>).
/// </summary>
public sealed class HugePagePool : IDisposable
{
    private const string NrHugePages = "/proc/sys/vm/nr_hugepages";
    private long _added;
    private readonly long _reserved;
    private readonly int _owner;

    private HugePagePool(long added, long reserved, int owner)
    {
        _added = added;
        _reserved = reserved;
        _owner = owner;
    }

    /// <summary>Pages this reservation added to the pool (0: it had enough free).</summary>
    public long AddedPages => Math.Max(0, _added);

    /// <summary>
    /// Makes sure the pool has <paramref name="pages"/> free 2 MiB pages, growing it if
    /// need be, and touches them once: the first use of fresh guest memory is about 20
    /// times slower on this machine kind (docs/design/engine-groundwork.md, section 4).
    /// </summary>
    /// <exception cref="InvalidOperationException">The pool could not be grown; the message says why and what to do.</exception>
    /// <remarks>Pages other live runs reserved and have not taken from the pool yet count as
    /// taken (the ledger says how many they reserved; the pool, how many are in use).</remarks>
    public static HugePagePool Reserve(long pages)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pages);
        int owner = Environment.ProcessId; // tibet-run becomes the program: the run lives as long
        using HugePageLedger? ledger = HugePageLedger.Open();
        long free = HugePageService.FreePoolPages();
        long othersUnused = ledger == null ? 0 : Math.Max(0, ledger.ReservedByOthers(owner) - (ReadTotal() - free));
        long needed = pages + othersUnused;
        long added = 0;
        if (free < needed)
        {
            // Asked for more than there is, the kernel would take all it can find (the
            // whole machine's free memory, for a moment): refuse up front instead.
            long availableBytes = MemInfoKiB("MemAvailable:") * 1024;
            if ((needed - free) > availableBytes / 2 / HugePageService.HugePageSize)
                throw new InvalidOperationException(
                    $"{pages} pages of 2 MiB (and {othersUnused} other runs hold) are more than half the memory available ({availableBytes >> 20} MiB); choose a smaller --huge-pages");
            long total = ReadTotal();
            long wanted = total + (needed - free);
            try
            {
                File.WriteAllText(NrHugePages, wanted.ToString(CultureInfo.InvariantCulture));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new InvalidOperationException(
                    $"cannot grow the hugetlb pool to {wanted} pages ({e.Message}); run as root, or reserve them beforehand: sysctl -w vm.nr_hugepages={wanted}", e);
            }
            added = ReadTotal() - total;
            free = HugePageService.FreePoolPages();
            if (free < needed)
            {
                Shrink(added);
                throw new InvalidOperationException(
                    $"the kernel found only {free} free 2 MiB pages of the {pages} needed (memory too fragmented, or too little free); " +
                    "reserve them at boot (hugepages= on the kernel command line) or choose a smaller --huge-pages");
            }
        }
        Touch(pages);
        if (ledger != null)
        {
            ledger.Owners.TryGetValue(owner, out HugePageLedger.Entry mine);
            ledger.Owners[owner] = new HugePageLedger.Entry(mine.Reserved + pages, mine.Added + added, mine.Reservations + 1);
            ledger.Save();
        }
        return new HugePagePool(added, pages, owner);
    }

    /// <summary>Gives back what the reservation of a program that has ended added to the
    /// pool (the custodian, when the program it outlives has ended): now if no other run
    /// lives, else by the last one to end.</summary>
    /// <param name="added">What it added: given back as it was, when there is no ledger.</param>
    public static void GiveBack(long added) => Release(added, owner: 0, reserved: 0);

    /// <summary>Gives the pages this reservation added back to the kernel, as far as no
    /// other run still needs them.</summary>
    public void Dispose()
    {
        long added = Interlocked.Exchange(ref _added, -1);
        if (added >= 0)
            Release(added, _owner, _reserved);
    }

    /// <summary>Takes a reservation of <paramref name="owner"/> off the ledger (0: an owner
    /// that has ended, dropped as the ledger was read, what it added owed already), and
    /// with no owner alive gives what is owed back to the kernel.</summary>
    private static void Release(long added, int owner, long reserved)
    {
        using HugePageLedger? ledger = HugePageLedger.Open();
        if (ledger == null)
        {
            if (added > 0)
                Shrink(added);
            return;
        }
        if (owner > 0 && ledger.Owners.Remove(owner, out HugePageLedger.Entry mine))
        {
            ledger.Owed += Math.Min(added, mine.Added);
            if (mine.Reservations > 1)
                ledger.Owners[owner] = new HugePageLedger.Entry(Math.Max(0, mine.Reserved - reserved), Math.Max(0, mine.Added - added), mine.Reservations - 1);
        }
        if (ledger.Owners.Count == 0 && ledger.Owed > 0)
        {
            Shrink(ledger.Owed);
            ledger.Owed = 0;
        }
        ledger.Save();
    }

    private static void Shrink(long pages)
    {
        try
        {
            long total = ReadTotal();
            File.WriteAllText(NrHugePages, Math.Max(0, total - pages).ToString(CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Leaving the pool larger wastes memory, loses nothing: say so.
            Console.Error.WriteLine($"tibet: could not shrink the hugetlb pool back by {pages} pages: {e.Message}");
        }
    }

    private static long MemInfoKiB(string field)
    {
        foreach (string line in File.ReadLines("/proc/meminfo"))
            if (line.StartsWith(field, StringComparison.Ordinal))
                return long.Parse(line.AsSpan(field.Length).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture);
        return 0;
    }

    private static long ReadTotal() => long.Parse(File.ReadAllText(NrHugePages).Trim(), CultureInfo.InvariantCulture);

    private static unsafe void Touch(long pages)
    {
        nuint length = (nuint)(pages * HugePageService.HugePageSize);
        nint p = Libc.mmap(0, length, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_HUGETLB, -1, 0);
        if (p == Libc.MAP_FAILED)
            return; // only a warm-up: the service reports a real shortage itself
        for (long i = 0; i < pages; i++)
            ((byte*)p)[i * HugePageService.HugePageSize] = 1;
        Libc.munmap(p, length);
    }
}
