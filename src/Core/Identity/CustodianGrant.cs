using System.Security.Cryptography;

namespace Tibet.Core.Identity;

/// <summary>
/// What the program receives instead of the identity when the custodian keeps it: the
/// identity's public half (so that messages and audit records name it) and a random grant
/// token. A process that shows the custodian the token (the program, its forked children,
/// and with --inherit-identity the programs it executes) gets the data key of a sealed
/// model it opened, once the custodian has decided, with the identity and the claim only
/// it holds, that the model is live. The X25519 secret never enters the program.
/// </summary>
/// <remarks>
/// <para>It travels like the hand-off (<see cref="IdentityHandOff"/>): an inherited
/// memfd_secret descriptor named by <see cref="IdentityHandOff.DescriptorVariable"/>. The
/// magic tells the two apart.</para>
/// <para>Layout, little-endian: "TBGR" ‖ 1 ‖ X25519 public key (32) ‖ Ed25519 public key
/// (32) ‖ token (32). Nothing follows.</para>
/// <para>The token is a capability, not a secret of the identity: whoever holds it can ask
/// for what the program may ask for (the keys of models sealed to the identity whose claim
/// check passes), which a process able to read the program's memory can already read
/// decrypted. It opens nothing after the custodian has ended.</para>
/// </remarks>
public static class CustodianGrant
{
    /// <summary>Bytes in a grant token.</summary>
    public const int TokenSize = 32;

    /// <summary>Bytes in a grant.</summary>
    public const int Size = 5 + 2 * PublicIdentity.KeySize + TokenSize;

    private const byte Version = 1;
    private const int AgreementPublicOffset = 5;
    private const int SigningPublicOffset = AgreementPublicOffset + PublicIdentity.KeySize;
    private const int TokenOffset = SigningPublicOffset + PublicIdentity.KeySize;
    private static ReadOnlySpan<byte> Magic => "TBGR"u8;

    /// <summary>Whether <paramref name="message"/> starts like a grant (not a hand-off).</summary>
    public static bool LooksLikeGrant(ReadOnlySpan<byte> message) => message.StartsWith(Magic);

    /// <summary>Encodes a grant for <paramref name="identity"/> with <paramref name="token"/>
    /// into a new pinned array that the caller wipes.</summary>
    public static byte[] Encode(PublicIdentity identity, ReadOnlySpan<byte> token)
    {
        ArgumentNullException.ThrowIfNull(identity);
        if (token.Length != TokenSize)
            throw new ArgumentException($"A grant token is {TokenSize} bytes.", nameof(token));
        byte[] message = GC.AllocateArray<byte>(Size, pinned: true);
        Magic.CopyTo(message);
        message[4] = Version;
        identity.AgreementKey.CopyTo(message.AsSpan(AgreementPublicOffset));
        identity.SigningKey.CopyTo(message.AsSpan(SigningPublicOffset));
        token.CopyTo(message.AsSpan(TokenOffset));
        return message;
    }

    /// <summary>Decodes a grant: the identity it names, and its token copied into a new
    /// pinned array.</summary>
    /// <exception cref="IdentityException">Anything but a well-formed grant, naming <paramref name="sourceName"/>.</exception>
    public static (PublicIdentity Identity, byte[] Token) Decode(ReadOnlySpan<byte> message, string sourceName)
    {
        if (message.Length != Size || !message.StartsWith(Magic) || message[4] != Version)
            throw new IdentityException(IdentityErrorKind.Malformed,
                $"{sourceName} is not a custodian grant from tibet-run: it is {message.Length} bytes long and does not start with \"TBGR\" and version {Version} " +
                "(a tibet-run of another version?). Start the program with tibet-run --identity.");
        var identity = new PublicIdentity(message.Slice(AgreementPublicOffset, PublicIdentity.KeySize), message.Slice(SigningPublicOffset, PublicIdentity.KeySize));
        byte[] token = GC.AllocateArray<byte>(TokenSize, pinned: true);
        message.Slice(TokenOffset, TokenSize).CopyTo(token);
        return (identity, token);
    }

    /// <summary>A new random token (getrandom), in a pinned array the caller wipes.</summary>
    public static byte[] NewToken()
    {
        byte[] token = GC.AllocateArray<byte>(TokenSize, pinned: true);
        Crypto.SecureRandom.Fill(token);
        return token;
    }

    /// <summary>Compares two tokens in constant time.</summary>
    public static bool Matches(ReadOnlySpan<byte> expected, ReadOnlySpan<byte> presented) =>
        presented.Length == TokenSize && CryptographicOperations.FixedTimeEquals(expected, presented);
}
