using System.Globalization;
using Tibet.Core.Interop;
using Tibet.Core.Storage;

namespace Tibet.Core.Paging.Huge;

/// <summary>
/// The kernel's pool of 2 MiB pages (vm.nr_hugepages). A <see cref="HugePageService"/>
/// takes its pages from it, so the pool must hold the budget before the program starts;
/// tibet-run (as root) grows it for the run and shrinks it back afterwards.
/// </summary>
public sealed class HugePagePool : IDisposable
{
    private const string NrHugePages = "/proc/sys/vm/nr_hugepages";
    private long _added;

    private HugePagePool(long added) => _added = added;

    /// <summary>Pages this reservation added to the pool (0: it had enough free).</summary>
    public long AddedPages => _added;

    /// <summary>
    /// Makes sure the pool has <paramref name="pages"/> free 2 MiB pages, growing it if
    /// need be, and touches them once: the first use of fresh guest memory is about 20
    /// times slower on this machine kind (docs/design/engine-groundwork.md, section 4).
    /// </summary>
    /// <exception cref="InvalidOperationException">The pool could not be grown; the message says why and what to do.</exception>
    public static HugePagePool Reserve(long pages)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pages);
        long free = HugePageService.FreePoolPages();
        long added = 0;
        if (free < pages)
        {
            // Asked for more than there is, the kernel would take all it can find (the
            // whole machine's free memory, for a moment): refuse up front instead.
            long availableBytes = MemInfoKiB("MemAvailable:") * 1024;
            if ((pages - free) > availableBytes / 2 / HugePageService.HugePageSize)
                throw new InvalidOperationException(
                    $"{pages} pages of 2 MiB are more than half the memory available ({availableBytes >> 20} MiB); choose a smaller --huge-pages");
            long total = ReadTotal();
            long wanted = total + (pages - free);
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
            if (free < pages)
            {
                Shrink(added);
                throw new InvalidOperationException(
                    $"the kernel found only {free} free 2 MiB pages of the {pages} needed (memory too fragmented, or too little free); " +
                    "reserve them at boot (hugepages= on the kernel command line) or choose a smaller --huge-pages");
            }
        }
        Touch(pages);
        return new HugePagePool(added);
    }

    /// <summary>Gives <paramref name="pages"/> added by a reservation of another process back
    /// (the custodian, when the program it outlives has ended).</summary>
    public static void GiveBack(long pages)
    {
        if (pages > 0)
            Shrink(pages);
    }

    /// <summary>Gives the pages this reservation added back to the kernel.</summary>
    public void Dispose()
    {
        long added = Interlocked.Exchange(ref _added, 0);
        if (added > 0)
            Shrink(added);
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
