// A Java heap full of secrets: N arrays of 8000 bytes (two pages each, so that a page
// holds at most one canary), each starting with "TIBET-JAVA-HEAP-CANARY:" and its index.
// Prints "ready <pid>", waits until stdin ends (the test scans the process's present
// pages meanwhile), then checks every array (the garbage collector may have moved them,
// and tibet may have sealed and brought them back) and prints "heap ok N".
// Usage: java -cp DIR HeapCanary N
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

public class HeapCanary {
    private static final byte[] TAG = "TIBET-JAVA-HEAP-CANARY:".getBytes(StandardCharsets.US_ASCII);

    // The canary is written digit by digit: a String per array would leave a garbage
    // copy of the canary in the heap for every array, and the scan would count those too.
    private static void mark(byte[] array, int index) {
        System.arraycopy(TAG, 0, array, 0, TAG.length);
        for (int d = 7, rest = index; d >= 0; d--, rest /= 10)
            array[TAG.length + d] = (byte) ('0' + rest % 10);
    }

    public static void main(String[] args) throws Exception {
        int count = Integer.parseInt(args[0]);
        List<byte[]> heap = new ArrayList<>(count);
        for (int i = 0; i < count; i++) {
            byte[] array = new byte[8000];
            mark(array, i);
            array[7999] = (byte) i;
            heap.add(array);
        }
        System.out.println("ready " + ProcessHandle.current().pid());
        System.out.flush();
        BufferedReader input = new BufferedReader(new InputStreamReader(System.in));
        while (input.readLine() != null) { }
        byte[] expected = new byte[TAG.length + 8];
        for (int i = 0; i < count; i++) {
            byte[] array = heap.get(i);
            mark(expected, i);
            for (int j = 0; j < expected.length; j++)
                if (array[j] != expected[j])
                    throw new IllegalStateException("array " + i + " changed at byte " + j);
            if (array[7999] != (byte) i)
                throw new IllegalStateException("array " + i + " changed at its end");
        }
        System.out.println("heap ok " + count);
    }
}
