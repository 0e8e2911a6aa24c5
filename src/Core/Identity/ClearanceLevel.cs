namespace Tibet.Core.Identity;

/// <summary>
/// How sensitive the data is that a claim's subject may open. The levels are totally
/// ordered: a claim for a level also covers every level below it.
/// </summary>
/// <remarks>The numeric values are part of the claim encoding (one byte) and never change.</remarks>
public enum ClearanceLevel : byte
{
    /// <summary>The lowest level: data anyone with a valid claim may open.</summary>
    Unclassified = 0,

    /// <summary>Above <see cref="Unclassified"/>.</summary>
    Restricted = 1,

    /// <summary>Above <see cref="Restricted"/>.</summary>
    Confidential = 2,

    /// <summary>Above <see cref="Confidential"/>.</summary>
    Secret = 3,

    /// <summary>The highest level.</summary>
    TopSecret = 4,
}
