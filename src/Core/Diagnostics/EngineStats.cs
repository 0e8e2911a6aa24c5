using System.Text;
using System.Text.Json;

namespace Tibet.Core.Diagnostics;

/// <summary>A snapshot of an engine's counters.</summary>
public readonly record struct EngineStats
{
    /// <summary>Page-fault messages served (each may map several pages).</summary>
    public long Faults { get; init; }
    /// <summary>Pages brought in by read-ahead beyond the faulting page.</summary>
    public long ReadAheadPages { get; init; }
    /// <summary>Pages that became resident again after an eviction (misses a larger
    /// budget would have avoided).</summary>
    public long Refaults { get; init; }
    /// <summary>The eviction policy's name (see EngineOptions.Eviction).</summary>
    public string? EvictionPolicy { get; init; }
    /// <summary>2 MiB ranges of resident pages collapsed into transparent huge pages.</summary>
    public long CollapsedRanges { get; init; }
    /// <summary>2 MiB ranges of model maps brought in whole, as transparent huge pages
    /// (read into a staging huge page and moved in, never collapsed).</summary>
    public long PlacedRanges { get; init; }
    /// <summary>Of <see cref="PlacedRanges"/>, those read ahead of the program (by the range reader).</summary>
    public long PlacedReadAhead { get; init; }
    /// <summary>Of <see cref="PlacedRanges"/>, those decrypted from their sealed copies
    /// under a full budget, after they had been evicted whole.</summary>
    public long PlacedSealedRanges { get; init; }
    /// <summary>Ranges placed whole that eviction took out whole (one move, no split).</summary>
    public long RangeEvictions { get; init; }
    /// <summary>Ranges filled into the huge page of a range just evicted whole, without
    /// the kernel freeing, allocating and zeroing one.</summary>
    public long RecycledRanges { get; init; }
    /// <summary>Fully resident ranges the kernel would not collapse.</summary>
    public long CollapseFailures { get; init; }
    /// <summary>Times the service passed from one handler to another, pinned to the CPU the
    /// program's faults came from (EngineOptions.HandlerPerCpu).</summary>
    public long HandlerHandovers { get; init; }
    /// <summary>The page cipher's name (see EngineOptions.Cipher).</summary>
    public string? Cipher { get; init; }
    /// <summary>Pages authenticated and decrypted.</summary>
    public long Decrypts { get; init; }
    /// <summary>Of those, pages the fill worker decrypted (a second thread sharing long runs).</summary>
    public long WorkerDecrypts { get; init; }
    /// <summary>Pages the fill worker filled from a source, its share of ranges read by
    /// two threads (a live sealed model's, decrypted by the custodian on two lanes).</summary>
    public long WorkerSourcedPages { get; init; }
    /// <summary>Pages that were also decompressed.</summary>
    public long Decompressions { get; init; }
    /// <summary>Pages mapped as zeros (untouched or known zero), with no cryptography.</summary>
    public long ZeroFills { get; init; }
    /// <summary>Pages evicted into the store: sealed anew, or clean (see CleanEvictions).</summary>
    public long Evictions { get; init; }
    /// <summary>Evictions of pages not written since their sealed copy was opened: the copy
    /// was kept, and nothing was encrypted (EngineOptions.TrackWrites).</summary>
    public long CleanEvictions { get; init; }
    /// <summary>Evictions of model pages not written since they came from the model file:
    /// dropped, never sealed, and read from the file again if touched
    /// (Arena.AttachSource).</summary>
    public long SourceDrops { get; init; }
    /// <summary>Eviction steps that took pages out (Evictions / EvictionBatches: pages per
    /// step; each step is a round trip to the process when the custodian serves it).</summary>
    public long EvictionBatches { get; init; }
    /// <summary>First writes to pages that kept their sealed copy (write-protect faults).</summary>
    public long WriteFaults { get; init; }
    /// <summary>Resident pages whose sealed copy is kept now.</summary>
    public long CleanCopies { get; init; }
    /// <summary>Pages of model maps brought in ahead of the program by an idle handler
    /// (EngineOptions.DecryptAheadRanges).</summary>
    public long PagesAhead { get; init; }
    /// <summary>Evicted pages that were all zeros: recorded, never encrypted.</summary>
    public long ZeroEvictions { get; init; }
    /// <summary>Pages read from an arena's source (a mapped model file) on first touch.</summary>
    public long SourcedPages { get; init; }
    /// <summary>Of <see cref="SourcedPages"/>, those the source installed itself: the
    /// custodian, for a live sealed model whose key it keeps (PageSource.InstallsRuns).</summary>
    public long SourceInstalls { get; init; }
    /// <summary>Sealed pages stored compressed.</summary>
    public long CompressedSeals { get; init; }
    /// <summary>Pages the kernel refused to move out (shared, pinned or reprotected).</summary>
    public long EvictionsRefused { get; init; }
    /// <summary>Moves the kernel reported as failed although the page had moved (see
    /// LocalAddressSpace.TookOutDespiteError); each was sealed like any other eviction.</summary>
    public long MovesReconciled { get; init; }
    /// <summary>Pages that failed authentication; their readers got SIGBUS.</summary>
    public long AuthenticationFailures { get; init; }
    public long RemoveEvents { get; init; }
    public long UnmapEvents { get; init; }
    public long RemapEvents { get; init; }
    public long ResidentBytes { get; init; }
    public long PeakResidentBytes { get; init; }
    public long ResidentBudgetBytes { get; init; }
    /// <summary>Ciphertext and tags held, by slot size.</summary>
    public long SealedBytes { get; init; }
    /// <summary>Native memory mapped for the ciphertext store.</summary>
    public long StoreMappedBytes { get; init; }
    public long SealedPages { get; init; }
    /// <summary>How long faulting threads waited in the handler: from reading the batch
    /// of messages that held the fault to the UFFDIO_COPY that woke the thread.</summary>
    public long FaultP50Nanoseconds { get; init; }
    public long FaultP99Nanoseconds { get; init; }
    public long FaultMaxNanoseconds { get; init; }
    /// <summary>Managed bytes the handler thread allocated after start-up; 0 is the design.</summary>
    public long HandlerAllocatedBytes { get; init; }
    /// <summary>The handler failed and serves every fault with SIGBUS (see PageEngine's failure policy).</summary>
    public bool HandlerFailed { get; init; }
    /// <summary>Forked children whose faults the engine serves now.</summary>
    public int ForkedChildren { get; init; }
    /// <summary>Most forked children served at once.</summary>
    public int PeakForkedChildren { get; init; }

    /// <summary>Pages forked children's agents took out of the children's memory (see
    /// Paging.Children.ChildService): they were clean, so nothing was encrypted.</summary>
    public long ChildEvictions { get; init; }

    /// <summary>Each forked child served now (see <see cref="ChildStats"/>); null: none.</summary>
    public ChildStats[]? Children { get; init; }

    /// <summary>Reads what <see cref="ToJson"/> wrote (the custodian's answer to a served
    /// process asking for its statistics); a missing field reads as zero.</summary>
    public static EngineStats FromJson(JsonElement root)
    {
        long Long(string name) => root.TryGetProperty(name, out JsonElement e) && e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out long v) ? v : 0;
        int Int(string name) => (int)Math.Clamp(Long(name), 0, int.MaxValue);
        string? Text(string name) => root.TryGetProperty(name, out JsonElement e) && e.ValueKind == JsonValueKind.String ? e.GetString() : null;
        var children = new List<ChildStats>();
        if (root.TryGetProperty("children", out JsonElement list) && list.ValueKind == JsonValueKind.Array)
            foreach (JsonElement c in list.EnumerateArray())
                if (c.ValueKind == JsonValueKind.Object)
                    children.Add(new ChildStats(
                        c.TryGetProperty("pid", out JsonElement p) && p.TryGetInt32(out int pid) ? pid : 0,
                        c.TryGetProperty("faults", out JsonElement f) && f.TryGetInt64(out long faults) ? faults : 0,
                        c.TryGetProperty("cleanResidentBytes", out JsonElement r) && r.TryGetInt64(out long clean) ? clean : 0,
                        c.TryGetProperty("evictions", out JsonElement e) && e.TryGetInt64(out long evictions) ? evictions : 0,
                        c.TryGetProperty("agent", out JsonElement a) && a.ValueKind == JsonValueKind.True));
        return new EngineStats
        {
            Faults = Long("faults"),
            ReadAheadPages = Long("readAheadPages"),
            Refaults = Long("refaults"),
            EvictionPolicy = Text("evictionPolicy"),
            Cipher = Text("cipher"),
            CollapsedRanges = Long("collapsedRanges"),
            PlacedRanges = Long("placedRanges"),
            PlacedReadAhead = Long("placedReadAhead"),
            PlacedSealedRanges = Long("placedSealedRanges"),
            RangeEvictions = Long("rangeEvictions"),
            RecycledRanges = Long("recycledRanges"),
            CollapseFailures = Long("collapseFailures"),
            HandlerHandovers = Long("handlerHandovers"),
            Decrypts = Long("decrypts"),
            Decompressions = Long("decompressions"),
            ZeroFills = Long("zeroFills"),
            Evictions = Long("evictions"),
            ZeroEvictions = Long("zeroEvictions"),
            CleanEvictions = Long("cleanEvictions"),
            SourceDrops = Long("sourceDrops"),
            EvictionBatches = Long("evictionBatches"),
            WriteFaults = Long("writeFaults"),
            CleanCopies = Long("cleanCopies"),
            PagesAhead = Long("pagesAhead"),
            WorkerDecrypts = Long("workerDecrypts"),
            WorkerSourcedPages = Long("workerSourcedPages"),
            SourcedPages = Long("sourcedPages"),
            SourceInstalls = Long("sourceInstalls"),
            CompressedSeals = Long("compressedSeals"),
            EvictionsRefused = Long("evictionsRefused"),
            MovesReconciled = Long("movesReconciled"),
            AuthenticationFailures = Long("authenticationFailures"),
            RemoveEvents = Long("removeEvents"),
            UnmapEvents = Long("unmapEvents"),
            RemapEvents = Long("remapEvents"),
            ResidentBytes = Long("residentBytes"),
            PeakResidentBytes = Long("peakResidentBytes"),
            ResidentBudgetBytes = Long("residentBudgetBytes"),
            SealedBytes = Long("sealedBytes"),
            StoreMappedBytes = Long("storeMappedBytes"),
            SealedPages = Long("sealedPages"),
            FaultP50Nanoseconds = Long("faultP50Ns"),
            FaultP99Nanoseconds = Long("faultP99Ns"),
            FaultMaxNanoseconds = Long("faultMaxNs"),
            HandlerAllocatedBytes = Long("handlerAllocatedBytes"),
            HandlerFailed = root.TryGetProperty("handlerFailed", out JsonElement b) && b.ValueKind == JsonValueKind.True,
            ForkedChildren = Int("forkedChildren"),
            PeakForkedChildren = Int("peakForkedChildren"),
            ChildEvictions = Long("childEvictions"),
            Children = [.. children],
        };
    }

    /// <summary>
    /// Two engines that served one process under one budget (with TIBET_SERVE=custodian:
    /// the program's own, for its model maps, and the custodian's, for its other memory;
    /// see Paging.Eviction.ResidentBudgetShare) as one: counts and bytes add up; the budget
    /// is the one they share; each engine's peak already counts the other's pages, so the
    /// peak is the larger; the fault latencies are the larger of the two (percentiles do
    /// not add).
    /// </summary>
    public EngineStats Plus(EngineStats other) => this with
    {
        Faults = Faults + other.Faults,
        ReadAheadPages = ReadAheadPages + other.ReadAheadPages,
        Refaults = Refaults + other.Refaults,
        EvictionPolicy = EvictionPolicy ?? other.EvictionPolicy,
        Cipher = Cipher ?? other.Cipher,
        CollapsedRanges = CollapsedRanges + other.CollapsedRanges,
        PlacedRanges = PlacedRanges + other.PlacedRanges,
        PlacedReadAhead = PlacedReadAhead + other.PlacedReadAhead,
        PlacedSealedRanges = PlacedSealedRanges + other.PlacedSealedRanges,
        RangeEvictions = RangeEvictions + other.RangeEvictions,
        RecycledRanges = RecycledRanges + other.RecycledRanges,
        CollapseFailures = CollapseFailures + other.CollapseFailures,
        HandlerHandovers = HandlerHandovers + other.HandlerHandovers,
        Decrypts = Decrypts + other.Decrypts,
        Decompressions = Decompressions + other.Decompressions,
        ZeroFills = ZeroFills + other.ZeroFills,
        Evictions = Evictions + other.Evictions,
        ZeroEvictions = ZeroEvictions + other.ZeroEvictions,
        CleanEvictions = CleanEvictions + other.CleanEvictions,
        SourceDrops = SourceDrops + other.SourceDrops,
        EvictionBatches = EvictionBatches + other.EvictionBatches,
        WriteFaults = WriteFaults + other.WriteFaults,
        CleanCopies = CleanCopies + other.CleanCopies,
        PagesAhead = PagesAhead + other.PagesAhead,
        WorkerDecrypts = WorkerDecrypts + other.WorkerDecrypts,
        WorkerSourcedPages = WorkerSourcedPages + other.WorkerSourcedPages,
        SourcedPages = SourcedPages + other.SourcedPages,
        SourceInstalls = SourceInstalls + other.SourceInstalls,
        CompressedSeals = CompressedSeals + other.CompressedSeals,
        EvictionsRefused = EvictionsRefused + other.EvictionsRefused,
        MovesReconciled = MovesReconciled + other.MovesReconciled,
        AuthenticationFailures = AuthenticationFailures + other.AuthenticationFailures,
        RemoveEvents = RemoveEvents + other.RemoveEvents,
        UnmapEvents = UnmapEvents + other.UnmapEvents,
        RemapEvents = RemapEvents + other.RemapEvents,
        ResidentBytes = ResidentBytes + other.ResidentBytes,
        PeakResidentBytes = Math.Max(PeakResidentBytes, other.PeakResidentBytes),
        ResidentBudgetBytes = Math.Max(ResidentBudgetBytes, other.ResidentBudgetBytes),
        SealedBytes = SealedBytes + other.SealedBytes,
        StoreMappedBytes = StoreMappedBytes + other.StoreMappedBytes,
        SealedPages = SealedPages + other.SealedPages,
        FaultP50Nanoseconds = Math.Max(FaultP50Nanoseconds, other.FaultP50Nanoseconds),
        FaultP99Nanoseconds = Math.Max(FaultP99Nanoseconds, other.FaultP99Nanoseconds),
        FaultMaxNanoseconds = Math.Max(FaultMaxNanoseconds, other.FaultMaxNanoseconds),
        HandlerAllocatedBytes = HandlerAllocatedBytes + other.HandlerAllocatedBytes,
        HandlerFailed = HandlerFailed || other.HandlerFailed,
        // Both engines see the same forked children (each through its own fork events).
        ForkedChildren = Math.Max(ForkedChildren, other.ForkedChildren),
        PeakForkedChildren = Math.Max(PeakForkedChildren, other.PeakForkedChildren),
        ChildEvictions = ChildEvictions + other.ChildEvictions,
        Children = [.. (Children ?? []).Concat(other.Children ?? []).GroupBy(c => c.Pid)
            .Select(g => new ChildStats(g.Key, g.Sum(c => c.Faults), g.Sum(c => c.CleanResidentBytes), g.Sum(c => c.Evictions), g.Any(c => c.Agent)))],
    };

    public string ToJson()
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            WriteProperties(w);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>Writes the counters as properties of the object <paramref name="w"/> is in,
    /// for reports that add their own (the interposer's exit statistics).</summary>
    public void WriteProperties(Utf8JsonWriter w)
    {
        w.WriteNumber("faults", Faults);
        w.WriteNumber("readAheadPages", ReadAheadPages);
        w.WriteNumber("refaults", Refaults);
        w.WriteString("evictionPolicy", EvictionPolicy);
        w.WriteString("cipher", Cipher);
        w.WriteNumber("collapsedRanges", CollapsedRanges);
        w.WriteNumber("placedRanges", PlacedRanges);
        w.WriteNumber("placedReadAhead", PlacedReadAhead);
        w.WriteNumber("placedSealedRanges", PlacedSealedRanges);
        w.WriteNumber("rangeEvictions", RangeEvictions);
        w.WriteNumber("recycledRanges", RecycledRanges);
        w.WriteNumber("collapseFailures", CollapseFailures);
        w.WriteNumber("handlerHandovers", HandlerHandovers);
        w.WriteNumber("decrypts", Decrypts);
        w.WriteNumber("decompressions", Decompressions);
        w.WriteNumber("zeroFills", ZeroFills);
        w.WriteNumber("evictions", Evictions);
        w.WriteNumber("zeroEvictions", ZeroEvictions);
        w.WriteNumber("cleanEvictions", CleanEvictions);
        w.WriteNumber("sourceDrops", SourceDrops);
        w.WriteNumber("evictionBatches", EvictionBatches);
        w.WriteNumber("writeFaults", WriteFaults);
        w.WriteNumber("cleanCopies", CleanCopies);
        w.WriteNumber("pagesAhead", PagesAhead);
        w.WriteNumber("workerDecrypts", WorkerDecrypts);
        w.WriteNumber("workerSourcedPages", WorkerSourcedPages);
        w.WriteNumber("sourcedPages", SourcedPages);
        w.WriteNumber("sourceInstalls", SourceInstalls);
        w.WriteNumber("compressedSeals", CompressedSeals);
        w.WriteNumber("evictionsRefused", EvictionsRefused);
        w.WriteNumber("movesReconciled", MovesReconciled);
        w.WriteNumber("authenticationFailures", AuthenticationFailures);
        w.WriteNumber("removeEvents", RemoveEvents);
        w.WriteNumber("unmapEvents", UnmapEvents);
        w.WriteNumber("remapEvents", RemapEvents);
        w.WriteNumber("residentBytes", ResidentBytes);
        w.WriteNumber("peakResidentBytes", PeakResidentBytes);
        w.WriteNumber("residentBudgetBytes", ResidentBudgetBytes);
        w.WriteNumber("sealedBytes", SealedBytes);
        w.WriteNumber("storeMappedBytes", StoreMappedBytes);
        w.WriteNumber("sealedPages", SealedPages);
        w.WriteNumber("faultP50Ns", FaultP50Nanoseconds);
        w.WriteNumber("faultP99Ns", FaultP99Nanoseconds);
        w.WriteNumber("faultMaxNs", FaultMaxNanoseconds);
        w.WriteNumber("handlerAllocatedBytes", HandlerAllocatedBytes);
        w.WriteBoolean("handlerFailed", HandlerFailed);
        w.WriteNumber("forkedChildren", ForkedChildren);
        w.WriteNumber("peakForkedChildren", PeakForkedChildren);
        w.WriteNumber("childEvictions", ChildEvictions);
        w.WriteStartArray("children");
        foreach (ChildStats child in Children ?? [])
        {
            w.WriteStartObject();
            w.WriteNumber("pid", child.Pid);
            w.WriteNumber("faults", child.Faults);
            w.WriteNumber("cleanResidentBytes", child.CleanResidentBytes);
            w.WriteNumber("evictions", child.Evictions);
            w.WriteBoolean("agent", child.Agent);
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }
}

/// <summary>One forked child the engine serves: its faults, the pages it holds that its
/// agent may take out (read from sealed copies, not written), the pages taken out, and
/// whether it has an agent at all. Pid 0: its fork is not reported yet (or a grandchild).</summary>
public readonly record struct ChildStats(int Pid, long Faults, long CleanResidentBytes, long Evictions, bool Agent);
