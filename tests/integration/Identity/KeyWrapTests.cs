using Tibet.Core.Identity;
using Xunit;
using SecretIdentity = Tibet.Core.Identity.Identity;

namespace Tibet.IntegrationTests.Identities;

/// <summary>Wrapping data keys to identities.</summary>
public sealed class KeyWrapTests : IDisposable
{
    private static readonly byte[] Context = "sealed-model:0123456789abcdef"u8.ToArray();

    private readonly SecretIdentity _recipient = SecretIdentity.Generate();
    private readonly SecretIdentity _other = SecretIdentity.Generate();
    private readonly byte[] _dataKey = Enumerable.Range(0, 32).Select(i => (byte)(i * 7 + 1)).ToArray();

    public void Dispose()
    {
        _recipient.Dispose();
        _other.Dispose();
    }

    [Fact]
    public void Round_trip_recovers_the_data_key()
    {
        byte[] wrapped = KeyWrap.Wrap(_recipient.Public, _dataKey, Context);
        Assert.Equal(KeyWrap.WrappedSize, wrapped.Length);

        var recovered = new byte[32];
        Assert.Equal(KeyUnwrapResult.Success, KeyWrap.TryUnwrap(_recipient, wrapped, Context, recovered));
        Assert.Equal(_dataKey, recovered);
    }

    [Fact]
    public void A_recipient_loaded_from_its_file_unwraps_too()
    {
        using var dir = new TempDirectory();
        IdentityFile.WriteSecret(dir.File("r.id"), _recipient);
        byte[] wrapped = KeyWrap.Wrap(IdentityFile.ReadPublic(dir.File("r.id")), _dataKey, Context);
        using var loaded = IdentityFile.ReadSecret(dir.File("r.id"));
        var recovered = new byte[32];
        Assert.Equal(KeyUnwrapResult.Success, KeyWrap.TryUnwrap(loaded, wrapped, Context, recovered));
        Assert.Equal(_dataKey, recovered);
    }

    [Fact]
    public void Each_wrap_uses_a_fresh_ephemeral_key()
    {
        byte[] first = KeyWrap.Wrap(_recipient.Public, _dataKey, Context);
        byte[] second = KeyWrap.Wrap(_recipient.Public, _dataKey, Context);
        Assert.NotEqual(first[37..69], second[37..69]);   // ephemeral public keys
        Assert.NotEqual(first[69..], second[69..]);       // ciphertext and tag
        Assert.Equal(first[..37], second[..37]);           // magic, version, recipient
        Assert.DoesNotContain(Convert.ToHexString(_dataKey), Convert.ToHexString(first));
    }

    [Fact]
    public void The_wrong_recipient_is_told_so_and_gets_nothing()
    {
        byte[] wrapped = KeyWrap.Wrap(_recipient.Public, _dataKey, Context);
        var recovered = Enumerable.Repeat((byte)0xAA, 32).ToArray();
        Assert.Equal(KeyUnwrapResult.WrongRecipient, KeyWrap.TryUnwrap(_other, wrapped, Context, recovered));
        Assert.All(recovered, b => Assert.Equal(0, b));
        Assert.Contains("another identity", KeyWrap.Describe(KeyUnwrapResult.WrongRecipient));
    }

    [Fact]
    public void Readdressing_a_wrapped_key_to_another_identity_does_not_open_it()
    {
        byte[] wrapped = KeyWrap.Wrap(_recipient.Public, _dataKey, Context);
        _other.Fingerprint.Bytes.CopyTo(wrapped.AsSpan(5));
        var recovered = new byte[32];
        Assert.Equal(KeyUnwrapResult.AuthenticationFailed, KeyWrap.TryUnwrap(_other, wrapped, Context, recovered));
        Assert.All(recovered, b => Assert.Equal(0, b));
    }

    [Fact]
    public void Another_context_does_not_open_it()
    {
        byte[] wrapped = KeyWrap.Wrap(_recipient.Public, _dataKey, Context);
        var recovered = new byte[32];
        Assert.Equal(KeyUnwrapResult.AuthenticationFailed, KeyWrap.TryUnwrap(_recipient, wrapped, "sealed-model:other"u8, recovered));
        Assert.Equal(KeyUnwrapResult.AuthenticationFailed, KeyWrap.TryUnwrap(_recipient, wrapped, [], recovered));
        Assert.All(recovered, b => Assert.Equal(0, b));
    }

    [Theory]
    [InlineData(40)]   // ephemeral key
    [InlineData(80)]   // ciphertext
    [InlineData(110)]  // tag
    public void A_changed_byte_fails_authentication(int offset)
    {
        byte[] wrapped = KeyWrap.Wrap(_recipient.Public, _dataKey, Context);
        wrapped[offset] ^= 0x80;
        var recovered = new byte[32];
        Assert.Equal(KeyUnwrapResult.AuthenticationFailed, KeyWrap.TryUnwrap(_recipient, wrapped, Context, recovered));
        Assert.All(recovered, b => Assert.Equal(0, b));
    }

    [Fact]
    public void A_low_order_ephemeral_key_is_refused_without_an_exception()
    {
        byte[] wrapped = KeyWrap.Wrap(_recipient.Public, _dataKey, Context);
        Array.Clear(wrapped, 37, 32);
        Assert.Equal(KeyUnwrapResult.AuthenticationFailed, KeyWrap.TryUnwrap(_recipient, wrapped, Context, new byte[32]));
    }

    [Fact]
    public void Malformed_and_newer_versions_are_told_apart()
    {
        byte[] wrapped = KeyWrap.Wrap(_recipient.Public, _dataKey, Context);
        Assert.Equal(KeyUnwrapResult.Malformed, KeyWrap.TryUnwrap(_recipient, wrapped[..^1], Context, new byte[32]));
        Assert.Equal(KeyUnwrapResult.Malformed, KeyWrap.TryUnwrap(_recipient, [], Context, new byte[32]));
        byte[] newer = (byte[])wrapped.Clone();
        newer[4] = 2;
        Assert.Equal(KeyUnwrapResult.UnsupportedVersion, KeyWrap.TryUnwrap(_recipient, newer, Context, new byte[32]));
    }

    [Fact]
    public void Wrapping_refuses_a_wrong_key_size_and_a_low_order_recipient()
    {
        Assert.Throws<ArgumentException>(() => KeyWrap.Wrap(_recipient.Public, new byte[16], Context));
        var lowOrder = new PublicIdentity(new byte[32], _recipient.Public.SigningKey);
        Assert.Contains("low-order", Assert.Throws<ArgumentException>(() => KeyWrap.Wrap(lowOrder, _dataKey, Context)).Message);
    }
}
