
namespace Tibet.Core.Paging;

/// <summary>
/// Where an arena's untouched pages come from when they are not zeros: the file the
/// arena maps. A page is read from its source on its first touch; once evicted it lives
/// in the store, sealed under the arena's key, like any other page, unless the arena
/// refetches (Arena.AttachSource): then a page not written since it came from the source
/// is dropped, untouched again, and read from the source at its next touch.
/// </summary>
/// <remarks>
/// <para>The engine owns the source once attached: it releases it with the arena, and
/// retains it for every forked child that may still read the arena's untouched pages.</para>
/// <para>An abstract class, not an interface, as AddressSpaceOps: the runtime resolves an
/// interface call lazily at each call site, and a site that met a source type it had not
/// met before called malloc on the fault path (the fill worker's FillRun, a forked child's
/// fault served from a file: the malloc probe test); a virtual call goes through the
/// method table.</para>
/// </remarks>
public abstract class PageSource
{
    /// <summary>
    /// Writes the contents of page <paramref name="pageIndex"/> of the arena into
    /// <paramref name="page"/> (4096 bytes) and says what they are: data, zeros (then
    /// <paramref name="page"/> is cleared), or tampered (the page must never be mapped; its
    /// reader gets SIGBUS).
    /// </summary>
    /// <remarks>Called by the fault handler under the engine lock: it must not allocate
    /// managed memory, call malloc, take locks a faulting thread may hold, or throw.</remarks>
    public abstract PageVerdict Fill(long pageIndex, Span<byte> page);

    /// <summary>The fault being served will ask for pages <paramref name="firstPage"/> to
    /// <paramref name="firstPage"/> + <paramref name="pages"/> − 1, in order: a source that
    /// reads ahead can read exactly that run in one request. A hint only; same rules as Fill.</summary>
    public virtual void BeginRun(long firstPage, int pages)
    {
    }

    /// <summary>
    /// Reads the run announced last (<see cref="BeginRun"/>) from <paramref name="firstPage"/>
    /// into the source's own window, decrypting it if the source is sealed, so that the
    /// <see cref="Fill"/> calls that follow take it from memory. Called by the fault handler
    /// <b>without the engine lock</b> (file reads and cryptography never hold it): it may touch
    /// only the source's own state, and the handler holds a reference (<see cref="Retain"/>)
    /// meanwhile. No allocation, no throwing. Default: nothing (Fill reads).
    /// </summary>
    public virtual void Prefetch(long firstPage) { }

    /// <summary>
    /// Writes pages <paramref name="firstPage"/> to <paramref name="firstPage"/> +
    /// <paramref name="pages"/> − 1 into <paramref name="destination"/> (page-aligned,
    /// pages × 4096 bytes) at once, for 2 MiB service: Keep if any page holds data, Zero
    /// if none does, Tampered if any page must never be mapped. Sources that can read a
    /// run in one request override it; the default asks page by page. Same rules as Fill.
    /// </summary>
    public virtual PageVerdict FillRun(long firstPage, int pages, Span<byte> destination)
    {
        bool any = false;
        for (int i = 0; i < pages; i++)
        {
            PageVerdict verdict = Fill(firstPage + i, destination.Slice(i * Userfaultfd.PageSize, Userfaultfd.PageSize));
            if (verdict == PageVerdict.Tampered)
                return verdict;
            any |= verdict == PageVerdict.Keep;
        }
        return any ? PageVerdict.Keep : PageVerdict.Zero;
    }

    /// <summary>
    /// Whether <see cref="FillRun"/> may run on a second thread (the fault service's fill
    /// worker) while the handler calls <see cref="Fill"/> for other pages: it touches none
    /// of the state Fill and <see cref="Prefetch"/> use. Then the fault service shares a
    /// long run of this source's pages between the two threads, as it does a run of sealed
    /// pages. Default: false.
    /// </summary>
    public virtual bool FillsRunsConcurrently => false;

    /// <summary>
    /// Whether the source installs runs of its pages into the engine's own address space
    /// itself (<see cref="InstallRun"/>): a live sealed model whose key the custodian keeps,
    /// which reads, decrypts and installs the pages from its own process. The fault service
    /// then asks it for the untouched pages of its arena's own faults and read-ahead, and
    /// fills no buffer; a forked child's faults still go through <see cref="Fill"/>. Default: false.
    /// </summary>
    public virtual bool InstallsRuns => false;

    /// <summary>
    /// Installs pages <paramref name="firstPage"/> to <paramref name="firstPage"/> +
    /// <paramref name="pages"/> − 1 at <paramref name="address"/> (where the first of them
    /// is mapped in the engine's address space; all absent), write-protected when asked,
    /// and wakes their waiters, as AddressSpaceOps.Copy would with their contents. Returns
    /// how many, from the first on, are installed; <paramref name="errno"/> says why not the
    /// next: EAGAIN (an event waits to be read), EEXIST (mapped already), or any other (the
    /// page is not the source's to install, failed authentication, its key holder is gone):
    /// then the caller serves it with <see cref="Fill"/>, which says what it is. Called under
    /// the engine lock, by the handler or the fill worker; same rules as Fill.
    /// </summary>
    public virtual int InstallRun(long firstPage, int pages, nint address, bool writeProtect, out int errno)
    {
        errno = Interop.Libc.EOPNOTSUPP;
        return 0;
    }

    /// <summary>The handler has served the fault (and its read-ahead run) it asked pages for:
    /// plaintext the source read ahead and no one took must not linger. Same rules as Fill.</summary>
    public virtual void EndOfFault() { }

    /// <summary>
    /// Page <paramref name="pageIndex"/> was refused (Fill said Tampered) and its reader
    /// gets SIGBUS. Called on the engine's reporter thread, never on the fault path, so it
    /// may format, write, audit, lock and allocate. Called after <see cref="Release"/> too
    /// when the arena went away meanwhile: it must not need what Release frees.
    /// </summary>
    public virtual void ReportTampered(long pageIndex) { }

    /// <summary>Why the source refused page <paramref name="pageIndex"/> (Fill said
    /// Tampered), in words for the report, when it knows better than "its file was altered
    /// or could not be read"; null otherwise. Called on the reporter thread, as
    /// <see cref="ReportTampered"/>.</summary>
    public virtual string? RefusalReason(long pageIndex) => null;

    /// <summary>Another holder (a forked child's snapshot of the arena) uses the source too.</summary>
    public virtual void Retain() { }

    /// <summary>A holder is done with the source: the arena was released, or a child's
    /// snapshot was. The last release frees what the source holds.</summary>
    public virtual void Release() { }
}

