using NSec.Cryptography;

namespace Tibet.Core.Crypto;

/// <summary>Passes writes on to a stream and hashes them with SHA-256 (libsodium) on the
/// way: the sealer's header hash covers exactly the bytes it wrote, and a gigabyte-sized
/// generated model gets its hash without being read back.</summary>
public sealed class HashingWriteStream : Stream
{
    private readonly Stream _destination;
    private IncrementalHash _hash;
    private long _written;

    public HashingWriteStream(Stream destination)
    {
        _destination = destination;
        IncrementalHash.Initialize(HashAlgorithm.Sha256, out _hash);
    }

    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => _written;

    public override long Position
    {
        get => _written;
        set => throw new NotSupportedException();
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        _destination.Write(buffer);
        IncrementalHash.Update(ref _hash, buffer);
        _written += buffer.Length;
    }

    /// <summary>Ends hashing; the stream must not be written to afterwards.</summary>
    public void FinishHash(Span<byte> hash) => IncrementalHash.Finalize(ref _hash, hash);

    public override void Flush() => _destination.Flush();

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();
}
