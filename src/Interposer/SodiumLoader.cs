using System.Reflection;
using System.Runtime.InteropServices;
using Tibet.Interposer.Native;

namespace Tibet.Interposer;

/// <summary>
/// Loads the libsodium.so shipped beside libtibet.so, privately.
/// </summary>
/// <remarks>
/// The host may link a libsodium of its own (or Debian's 1.0.18, which NSec refuses).
/// A plain DllImport would search the host's folder, and a global load would mix the
/// two libraries' symbols. dlopen with RTLD_LOCAL | RTLD_DEEPBIND keeps ours to
/// ourselves and leaves the host its own. The dlopen and dladdr calls are in
/// <see cref="Dl"/>, not in Core's Libc: only the interposer loads libraries.
/// </remarks>
internal static unsafe class SodiumLoader
{
    private static nint _handle;

    public static void Install()
    {
        if (_handle != 0)
            return;
        string path = Path.Combine(OwnDirectory(), "libsodium.so");
        _handle = Dl.dlopen(path, Dl.RTLD_NOW | Dl.RTLD_LOCAL | Dl.RTLD_DEEPBIND);
        if (_handle == 0)
            throw new InvalidOperationException($"cannot load {path}: {Marshal.PtrToStringUTF8((nint)Dl.dlerror())}; reinstall tibet (scripts/build.sh)");
        NativeLibrary.SetDllImportResolver(typeof(NSec.Cryptography.Key).Assembly, Resolve);
        NativeLibrary.SetDllImportResolver(typeof(Tibet.Core.Crypto.PageCipherSuite).Assembly, Resolve); // Core.Interop.Sodium
    }

    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath) =>
        name.StartsWith("libsodium", StringComparison.Ordinal) ? _handle : 0;

    /// <summary>The folder of libtibet.so, found from the address of our own code.</summary>
    private static string OwnDirectory()
    {
        Dl.DlInfo info;
        delegate* unmanaged<void> self = &Anchor;
        if (Dl.dladdr(self, &info) == 0 || info.dli_fname == null)
            throw new InvalidOperationException("dladdr cannot locate libtibet.so");
        string file = Marshal.PtrToStringUTF8((nint)info.dli_fname)!;
        return Path.GetDirectoryName(Path.GetFullPath(file))!;
    }

    [UnmanagedCallersOnly]
    private static void Anchor() { }
}
