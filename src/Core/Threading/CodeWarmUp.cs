using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using System.Runtime.CompilerServices;

namespace Tibet.Core.Threading;

/// <summary>Readies a handler's code at start-up: its classes' static constructors, and,
/// where a JIT compiles at all, its methods.</summary>
internal static class CodeWarmUp
{
    /// <summary>
    /// Runs on the constructing thread what would otherwise run on a handler the first
    /// time a path is taken, and call malloc there, on the fault path:
    /// <list type="bullet">
    /// <item>the static constructor of each of <paramref name="types"/>. A class with
    /// static field initializers and no explicit static constructor sets its fields at
    /// their first read, which may come long after start-up (a handler per CPU read one
    /// at the first hand-over that was near, and its static constructor called operator
    /// new five times: MallocFreedomTests);</item>
    /// <item>under a JIT (the tests, tibet-bench), the compilation of every method of
    /// those classes and their nested classes (whose static constructors run too): a
    /// method is compiled on its first call, and the JIT allocates with malloc, so a
    /// handler's rare paths (a refused move, a poisoned page, a child's fault) would call
    /// malloc the first time they run. Compiled ahead of time (libtibet.so, NativeAOT)
    /// there is nothing to compile.</item>
    /// </list>
    /// </summary>
    [UnconditionalSuppressMessage("Trimming", "IL2059", Justification = "The types are the engine's own, in use: a static constructor " +
        "one keeps is run; one trimmed away (or preinitialized ahead of time) has nothing left to run.")]
    public static void Prepare(params ReadOnlySpan<Type> types)
    {
        foreach (Type type in types)
            RuntimeHelpers.RunClassConstructor(type.TypeHandle);
        if (!RuntimeFeature.IsDynamicCodeCompiled)
            return;
        foreach (Type type in types)
            PrepareDeclaredMethods(type);
    }

    [UnconditionalSuppressMessage("Trimming", "IL2070", Justification = "Runs only under a JIT, where nothing is trimmed.")]
    [UnconditionalSuppressMessage("Trimming", "IL2059", Justification = "Runs only under a JIT, where nothing is trimmed.")]
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
        {
            if (nested.ContainsGenericParameters)
                continue;
            RuntimeHelpers.RunClassConstructor(nested.TypeHandle);
            PrepareDeclaredMethods(nested);
        }
    }
}
