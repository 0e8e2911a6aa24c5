namespace Tibet.Core.Interop;

/// <summary>
/// The libsodium functions tibet calls itself, beside those NSec calls for it: one family
/// per file, as <see cref="Libc"/>.
/// </summary>
/// <remarks>
/// The name resolves as NSec's does: to the libsodium.so shipped beside the program
/// (tibet-run, the tests), and in libtibet.so to the private copy the interposer loads
/// (Tibet.Interposer.SodiumLoader resolves it for this assembly too).
/// </remarks>
internal static unsafe partial class Sodium
{
    private const string Library = "libsodium";
}
