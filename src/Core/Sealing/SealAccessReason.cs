namespace Tibet.Core.Sealing;

/// <summary>
/// Why a sealed model is live or dead. Opening checks in the order listed here and
/// reports the first check that fails: <see cref="SealedModel.Open(string)"/> throws a
/// <see cref="SealedModelException"/> for the reasons up to <see cref="MalformedSeal"/>,
/// <see cref="SealedModel.Decide"/> returns the others.
/// </summary>
public enum SealAccessReason
{
    /// <summary>Every check passed: the model may be decrypted.</summary>
    Live,

    /// <summary>The file is not a GGUF file the strict reader accepts.</summary>
    MalformedModel,

    /// <summary>A valid GGUF file, but not a sealed one (no tibet.seal.* metadata).</summary>
    NotSealed,

    /// <summary>Sealed with a format version this build does not read.</summary>
    UnsupportedSealVersion,

    /// <summary>The seal metadata or the trailer is malformed or out of bounds: a missing
    /// or mistyped tibet.seal.* key, a wrong length, a file truncated or extended.</summary>
    MalformedSeal,

    /// <summary>No identity was given.</summary>
    NoIdentity,

    /// <summary>The model is not sealed to this identity: no wrapped key in the trailer is
    /// addressed to it.</summary>
    WrongIdentity,

    /// <summary>A key is addressed to this identity but does not open: the wrapped key, or
    /// the file id it is bound to, was altered.</summary>
    KeyTampered,

    /// <summary>The trailer's MAC does not verify: a header byte (metadata, clearance,
    /// issuers, tensor table), the trailer's tag table or the MAC itself was altered.</summary>
    HeaderTampered,

    /// <summary>No claim was given.</summary>
    NoClaim,

    /// <summary>The claim's signature does not verify: it was altered or forged.</summary>
    ClaimForged,

    /// <summary>The claim is signed by an issuer this model does not trust.</summary>
    UntrustedIssuer,

    /// <summary>The claim was issued to another identity.</summary>
    SubjectMismatch,

    /// <summary>The claim is not in force yet.</summary>
    ClaimNotYetValid,

    /// <summary>The claim has expired.</summary>
    ClaimExpired,

    /// <summary>The claim's clearance is below the model's.</summary>
    InsufficientClearance,

    /// <summary>The claim failed a check not listed above.</summary>
    ClaimRejected,

    /// <summary>Only from <see cref="ModelSealer"/>: the input is already sealed.</summary>
    AlreadySealed,

    /// <summary>Only from <see cref="ModelUnsealer"/>: a data page failed authentication,
    /// so the ciphertext was altered.</summary>
    DataTampered,

    /// <summary>The claim is limited to scopes that do not include the model's tibet.seal.scope.</summary>
    ScopeMismatch,
}
