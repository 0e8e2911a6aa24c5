using System.Text.Json;

namespace Tibet.Core.Paging.Huge;

/// <summary>A snapshot of a <see cref="HugePageService"/>'s counters.</summary>
public readonly record struct HugePageStats
{
    public long BudgetBytes { get; init; }
    /// <summary>2 MiB pages served (each read from its source).</summary>
    public long Faults { get; init; }
    /// <summary>Faults on pages that had been dropped before.</summary>
    public long Refaults { get; init; }
    /// <summary>2 MiB pages dropped to stay within the budget (never sealed: read-only).</summary>
    public long Evictions { get; init; }
    public long SourcedBytes { get; init; }
    public long ResidentBytes { get; init; }
    public long PeakResidentBytes { get; init; }
    /// <summary>Pages the program wrote after making the map writable; they stay resident.</summary>
    public long WrittenBytes { get; init; }
    public long WriteFaults { get; init; }
    public long PoisonedPages { get; init; }
    /// <summary>Ciphertext held in RAM for pages read from their source (each sealed once).</summary>
    public long SealedBytes { get; init; }
    /// <summary>Bytes of pages that came back by decryption from RAM.</summary>
    public long DecryptedBytes { get; init; }
    /// <summary>Pages whose ciphertext in RAM failed authentication; their readers got SIGBUS.</summary>
    public long AuthenticationFailures { get; init; }
    public long FaultP50Nanoseconds { get; init; }
    public long FaultP99Nanoseconds { get; init; }
    public long HandlerAllocatedBytes { get; init; }
    /// <summary>The handler's failure line, or null.</summary>
    public string? Failure { get; init; }

    public void WriteProperties(Utf8JsonWriter w)
    {
        w.WriteNumber("budgetBytes", BudgetBytes);
        w.WriteNumber("faults", Faults);
        w.WriteNumber("refaults", Refaults);
        w.WriteNumber("evictions", Evictions);
        w.WriteNumber("sourcedBytes", SourcedBytes);
        w.WriteNumber("residentBytes", ResidentBytes);
        w.WriteNumber("peakResidentBytes", PeakResidentBytes);
        w.WriteNumber("writtenBytes", WrittenBytes);
        w.WriteNumber("writeFaults", WriteFaults);
        w.WriteNumber("poisonedPages", PoisonedPages);
        w.WriteNumber("sealedBytes", SealedBytes);
        w.WriteNumber("decryptedBytes", DecryptedBytes);
        w.WriteNumber("authenticationFailures", AuthenticationFailures);
        w.WriteNumber("faultP50Ns", FaultP50Nanoseconds);
        w.WriteNumber("faultP99Ns", FaultP99Nanoseconds);
        w.WriteNumber("handlerAllocatedBytes", HandlerAllocatedBytes);
        if (Failure != null)
            w.WriteString("failure", Failure);
    }
}
