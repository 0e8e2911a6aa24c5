using Tibet.Core.Custodian;
using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.Core.Sealing;
using Xunit;

namespace Tibet.IntegrationTests.Sealing;

/// <summary>
/// The custodian's installer of a sealed model's pages (what serves a live model's maps
/// when the custodian keeps the key), on a real userfaultfd of this process: it installs
/// exactly the model's plaintext, never a page that fails authentication, and refuses
/// requests out of range. The whole path across processes is SealedRefetchTests'.
/// </summary>
public sealed unsafe class ProcessPageInstallerTests : IDisposable
{
    private const int PageSize = SealedModel.PageSize;

    private readonly SealingWorld _world = new();
    private readonly PlainModel _plain;
    private readonly string _sealedPath;
    private readonly SealedBytes _sealed;
    private readonly SealedModel _model;
    private readonly AccessDecision _decision;
    private readonly Userfaultfd _uffd;
    private readonly nint _map;
    private readonly nuint _mapLength;

    public ProcessPageInstallerTests()
    {
        _plain = PlainModel.Write(_world.PathOf("plain.gguf"), scale: 40);
        _sealedPath = _world.Seal(_plain.Path);
        _sealed = new SealedBytes(_sealedPath);
        _model = SealedModel.Open(_sealedPath);
        Assert.True(_model.DataPages >= 8, $"the test model has {_model.DataPages} data pages; it needs 8");
        _decision = _model.Decide(_world.Alice, _world.ClaimFor(_world.Alice), SealingWorld.Now);
        Assert.True(_decision.IsLive, _decision.ToString());
        _uffd = Userfaultfd.Open(0);
        _mapLength = (nuint)(_model.DataPages * PageSize);
        _map = Libc.mmap(0, _mapLength, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS, -1, 0);
        Assert.NotEqual(Libc.MAP_FAILED, _map);
        _uffd.Register(_map, _mapLength, UserfaultfdAbi.UFFDIO_REGISTER_MODE_MISSING); // throws, saying why, if it cannot
    }

    public void Dispose()
    {
        _uffd.Unregister(_map, _mapLength);
        Libc.munmap(_map, _mapLength);
        _uffd.Dispose();
        _decision.Dispose();
        _model.Dispose();
        _world.Dispose();
    }

    /// <summary>An installer on a copy of the engine's userfaultfd and of <paramref name="file"/>.</summary>
    private ProcessPageInstaller InstallerOver(string file)
    {
        int uffd = Libc.fcntl(_uffd.Descriptor, Libc.F_DUPFD_CLOEXEC, 3);
        var handle = File.OpenHandle(file);
        int fd = Libc.fcntl((int)handle.DangerousGetHandle(), Libc.F_DUPFD_CLOEXEC, 3);
        handle.Dispose();
        Assert.True(uffd >= 0 && fd >= 0, "dup failed");
        return new ProcessPageInstaller(uffd, fd, _model.DataOffset, lanes: 1);
    }

    private bool[] Present()
    {
        var vector = new byte[_model.DataPages];
        fixed (byte* v = vector)
            Assert.Equal(0, Libc.mincore(_map, _mapLength, v));
        return vector.Select(b => (b & 1) != 0).ToArray();
    }

    [Fact]
    public void Installs_the_models_plaintext_into_the_map_and_says_so()
    {
        Assert.True(ProcessPageInstaller.IsUserfaultfd(_uffd.Descriptor));
        using var installer = InstallerOver(_sealedPath);

        int installed = installer.Install(0, _decision.Key!, 0, (int)_model.DataPages, _map, writeProtect: false, out int errno);

        Assert.Equal(0, errno);
        Assert.Equal((int)_model.DataPages, installed);
        Assert.All(Present(), Assert.True);
        byte[] expected = _plain.DataSection();
        Assert.True(new ReadOnlySpan<byte>((void*)_map, expected.Length).SequenceEqual(expected), "the installed pages differ from the model's plaintext");
        // The rest of the last page is the sealer's zero padding.
        Assert.True(new ReadOnlySpan<byte>((byte*)_map + expected.Length, (int)_mapLength - expected.Length).IndexOfAnyExcept((byte)0) < 0);

        // A page already mapped: EEXIST, nothing installed over it.
        Assert.Equal(0, installer.Install(0, _decision.Key!, 3, 2, _map + 3 * PageSize, writeProtect: false, out errno));
        Assert.Equal(Libc.EEXIST, errno);
    }

    [Fact]
    public void Stops_before_a_page_that_fails_authentication_and_never_installs_it()
    {
        const int bad = 5;
        string tampered = _world.PathOf("tampered.sealed.gguf");
        File.WriteAllBytes(tampered, _sealed.WithFlippedBit(_sealed.DataOffset + bad * PageSize + 100));
        using var installer = InstallerOver(tampered);

        int installed = installer.Install(0, _decision.Key!, 0, (int)_model.DataPages, _map, writeProtect: false, out int errno);

        Assert.Equal(bad, installed);
        Assert.Equal(Libc.EBADMSG, errno);
        bool[] present = Present();
        Assert.All(present[..bad], Assert.True);
        Assert.All(present[bad..], Assert.False);
    }

    [Fact]
    public void Refuses_requests_out_of_range_and_installs_nothing()
    {
        using var installer = InstallerOver(_sealedPath);
        SealedModelKey key = _decision.Key!;
        int pages = (int)_model.DataPages;
        var refused = new (long First, int Count, nint Address)[]
        {
            (pages - 1, 2, _map),                           // past the last data page
            (-1, 1, _map),                                  // before the first
            (0, 0, _map),                                   // nothing
            (0, ProcessPageInstaller.MaxRequestPages + 1, _map), // more than a request may ask
            (0, 1, _map + 1),                               // not page-aligned
            (0, 1, 0),                                      // no address
        };
        foreach (var (first, count, address) in refused)
        {
            Assert.Equal(0, installer.Install(0, key, first, count, address, writeProtect: false, out int errno));
            Assert.Equal(Libc.EINVAL, errno);
        }
        Assert.All(Present(), Assert.False);
    }

    [Fact]
    public void Something_other_than_a_userfaultfd_is_not_taken_for_one()
    {
        using var devNull = File.OpenHandle("/dev/null");
        Assert.False(ProcessPageInstaller.IsUserfaultfd((int)devNull.DangerousGetHandle()));
        Assert.False(ProcessPageInstaller.IsUserfaultfd(-1));
    }
}
