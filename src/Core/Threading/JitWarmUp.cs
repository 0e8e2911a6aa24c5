using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using System.Runtime.CompilerServices;

namespace Tibet.Core.Threading;

/// <summary>Compiles a handler's code at start-up, where a JIT compiles at all.</summary>
internal static class JitWarmUp
{
    /// <summary>
    /// Under a JIT (the tests, tibet-bench), a method is compiled on its first call, and
    /// the JIT allocates with malloc. A handler thread's rare paths (a refused move, a
    /// poisoned page, a child's fault) would then call malloc the first time they run,
    /// on the fault path. So every method of the handler's parts is compiled here, on the
    /// constructing thread. Compiled ahead of time (libtibet.so, NativeAOT) there is
    /// nothing to do.
    /// </summary>
    public static void Prepare(params ReadOnlySpan<Type> types)
    {
        if (!RuntimeFeature.IsDynamicCodeCompiled)
            return;
        foreach (Type type in types)
            PrepareDeclaredMethods(type);
    }

    [UnconditionalSuppressMessage("Trimming", "IL2070", Justification = "Runs only under a JIT, where nothing is trimmed.")]
    private static void PrepareDeclaredMethods(Type type)
    {
        const BindingFlags all = BindingFlags.Instance | BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly;
        foreach (MethodInfo method in type.GetMethods(all))
        {
            if (method.IsAbstract || method.ContainsGenericParameters)
                continue;
            RuntimeHelpers.PrepareMethod(method.MethodHandle);
        }
        foreach (Type nested in type.GetNestedTypes(BindingFlags.Public | BindingFlags.NonPublic))
            if (!nested.ContainsGenericParameters)
                PrepareDeclaredMethods(nested);
    }
}
