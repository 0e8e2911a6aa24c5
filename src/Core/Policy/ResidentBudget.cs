using System.Globalization;

namespace Tibet.Core.Policy;

/// <summary>
/// The resident plaintext budget: how much of a process's encrypted memory may be
/// plaintext at once. Everything beyond it is sealed (AES-256-GCM) and dropped.
/// </summary>
/// <remarks>
/// The default is finite, so that a program run with no options has its cold memory
/// sealed. 64 MiB per process was chosen by measurement
/// (bench/results/2026-12-04-default-budget.md): it keeps most of a 256 MB Redis data set
/// sealed while the working sets of the programs we test (Redis's hot keys, the
/// allocator's metadata, llama.cpp's KV cache and scratch buffers for small models) stay
/// resident. "unlimited" must be asked for, and is announced, because it seals nothing.
/// </remarks>
public static class ResidentBudget
{
    /// <summary>The budget when none is given: 64 MiB per process.</summary>
    public const long DefaultBytes = 64L << 20;

    /// <summary>No budget: nothing is ever sealed. <see cref="long.MaxValue"/>, as the engine takes it.</summary>
    public const long Unlimited = long.MaxValue;

    /// <summary>The word that asks for <see cref="Unlimited"/>, on the command line and in TIBET_BUDGET.</summary>
    public const string UnlimitedWord = "unlimited";

    /// <summary>A budget for people: "64 MiB", "unlimited".</summary>
    public static string Describe(long bytes) => bytes == Unlimited ? UnlimitedWord
        : bytes % (1L << 30) == 0 ? (bytes >> 30).ToString(CultureInfo.InvariantCulture) + " GiB"
        : bytes % (1L << 20) == 0 ? (bytes >> 20).ToString(CultureInfo.InvariantCulture) + " MiB"
        : (bytes >> 10).ToString(CultureInfo.InvariantCulture) + " KiB";

    /// <summary>The line that says what an unlimited budget gives up.</summary>
    public const string UnlimitedConsequence =
        "no page is ever sealed: all of the program's redirected memory stays plaintext (and swappable) for its whole life";
}
