using Tibet.Core.Identity;

namespace Tibet.Fuzz.Targets;

/// <summary>
/// Identity files: the armored text of .pub and .id files (Armor, IdentityFile.DecodePublic
/// and DecodeSecret) and, for the same bytes taken as a binary body, SecretIdentityFormat
/// and PublicIdentity.Decode. Each documents <see cref="IdentityException"/> for anything
/// but a well-formed identity. No passphrase is supplied: a protected body is refused
/// with PassphraseRequired before Argon2id runs, because the Argon2id cost comes from the
/// file (bounded at 1 GiB and 10 passes by design) and would make every such input a hang.
/// </summary>
internal sealed class IdentityTarget : FuzzTarget
{
    public override string Name => "identity";

    public override string RefusalContract => nameof(IdentityException);

    public override FuzzOutcome Run(byte[] input)
    {
        var accepted = new List<string>();
        var refused = new List<string>();

        Try("public armor", () => IdentityFile.DecodePublic(input, "fuzz input").Fingerprint.ToString());
        Try("secret armor", () =>
        {
            using var identity = IdentityFile.DecodeSecret(input, passphraseProvider: null, "fuzz input");
            return identity.Public.Fingerprint.ToString();
        });
        Try("secret body", () =>
        {
            using var identity = SecretIdentityFormat.Decode(input, passphraseProvider: null, "fuzz input");
            return identity.Public.Fingerprint.ToString();
        });
        Try("public body", () => PublicIdentity.Decode(input).Fingerprint.ToString());

        if (SecretIdentityFormat.TryReadPublic(input, out var stored, out bool isProtected, out _, out _))
            accepted.Add($"secret body public keys {stored.Fingerprint.ToShortString()}{(isProtected ? " (protected)" : "")}");
        _ = Armor.ReadLabel(input);

        return accepted.Count > 0
            ? FuzzOutcome.Accept(string.Join("; ", accepted))
            : FuzzOutcome.Refuse(string.Join("; ", refused));

        void Try(string what, Func<string> decode)
        {
            try
            {
                accepted.Add($"{what}: {decode()}");
            }
            catch (IdentityException e)
            {
                refused.Add($"{what}: {e.Kind}");
            }
        }
    }
}
