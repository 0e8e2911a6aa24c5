using Tibet.Core.Identity;

namespace Tibet.Fuzz.Targets;

/// <summary>
/// Fixed identities and a fixed moment, so that the seed corpus (sealed to
/// <see cref="Recipient"/>, with claims from <see cref="Issuer"/>) lets the fuzzer reach
/// the checks behind a successful key unwrap in every run, on every machine. These keys
/// protect nothing: they exist only to drive the parsers.
/// </summary>
internal static class FuzzKeys
{
    /// <summary>The moment every decision and claim check is made for.</summary>
    public static readonly DateTimeOffset Now = new(2026, 6, 1, 0, 0, 0, TimeSpan.Zero);

    public static readonly DateTimeOffset NotBefore = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public static readonly DateTimeOffset Expires = new(2027, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public const string Scope = "fuzz:model";

    public static Identity Recipient { get; } = FromSeed(0x52);

    public static Identity Issuer { get; } = FromSeed(0x49);

    /// <summary>TOPSECRET for <see cref="Recipient"/> from <see cref="Issuer"/>, no scopes.</summary>
    public static Claim Claim { get; } =
        Claim.Issue(Issuer, Recipient.Public, ClearanceLevel.TopSecret, NotBefore, Expires, issuedAt: NotBefore);

    public static ClaimRequirements Requirements { get; } = new()
    {
        TrustedIssuers = [Issuer.Public],
        Subject = Recipient.Public,
        MinimumClearance = ClearanceLevel.Secret,
        Scope = Scope,
        At = Now,
    };

    /// <summary>An exportable identity whose 64 secret bytes are derived from one byte.</summary>
    private static Identity FromSeed(byte seed)
    {
        Span<byte> secrets = stackalloc byte[Identity.SecretsSize];
        for (int i = 0; i < secrets.Length; i++)
            secrets[i] = (byte)(seed + 31 * i);
        return Identity.FromSecrets(secrets, exportable: true);
    }
}
