namespace Tibet.Core.Identity;

/// <summary>
/// The outcome of checking a claim. Exactly one reason is reported: the first check that
/// fails, in the order listed here (after <see cref="Valid"/>).
/// </summary>
public enum ClaimVerdictReason
{
    /// <summary>Every check passed.</summary>
    Valid,

    /// <summary>Not a claim, or not the one canonical encoding of one (bad armor, magic,
    /// length, field value, scope order, trailing bytes).</summary>
    BadEncoding,

    /// <summary>A claim of a format version this build does not read.</summary>
    UnsupportedVersion,

    /// <summary>The Ed25519 signature does not verify with the issuer key named in the
    /// claim: the claim was altered or forged.</summary>
    BadSignature,

    /// <summary>Correctly signed, but by an issuer that is not trusted.</summary>
    UntrustedIssuer,

    /// <summary>Issued to another identity than the one required.</summary>
    SubjectMismatch,

    /// <summary>The time checked is before the claim's not-before time.</summary>
    NotYetValid,

    /// <summary>The time checked is at or after the claim's expiry time.</summary>
    Expired,

    /// <summary>The claim's clearance is below the clearance required.</summary>
    InsufficientClearance,

    /// <summary>The claim is limited to scopes that do not include the one required.</summary>
    ScopeMismatch,
}
