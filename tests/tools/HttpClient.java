// A real JDK client for the kernel tests: java.net.HttpURLConnection with the JDK's defaults (on
// Linux with IPv6 available its sockets are AF_INET6 and an IPv4 peer is ::ffff:a.b.c.d).
// Run as a single source file: java HttpClient.java http://ip:port N
// GET /bytes/N, then POST N random bytes; prints one JSON line with what it saw.
import java.io.InputStream;
import java.io.OutputStream;
import java.net.HttpURLConnection;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.HexFormat;
import java.util.Random;

public class HttpClient {
    static String hex(byte[] b) {
        return HexFormat.of().formatHex(b);
    }

    static String quote(String s) {
        return s == null ? "null" : "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    public static void main(String[] args) throws Exception {
        String base = args[0];
        int n = Integer.parseInt(args[1]);
        StringBuilder out = new StringBuilder("{\"client\":\"jdk\"");
        try {
            HttpURLConnection get = (HttpURLConnection) new URL(base + "/bytes/" + n).openConnection();
            get.setConnectTimeout(10000);
            get.setReadTimeout(20000);
            int status = get.getResponseCode();
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            long got = 0;
            try (InputStream in = get.getInputStream()) {
                byte[] buf = new byte[65536];
                for (int r; (r = in.read(buf)) > 0; got += r) md.update(buf, 0, r);
            }
            out.append(",\"get\":{\"status\":").append(status).append(",\"received\":").append(got)
                .append(",\"sha256\":").append(quote(hex(md.digest())))
                .append(",\"expected\":").append(quote(get.getHeaderField("X-Sha256"))).append("}");

            byte[] body = new byte[n];
            new Random().nextBytes(body);
            HttpURLConnection post = (HttpURLConnection) new URL(base + "/sha256").openConnection();
            post.setConnectTimeout(10000);
            post.setReadTimeout(20000);
            post.setRequestMethod("POST");
            post.setDoOutput(true);
            post.setFixedLengthStreamingMode(n);
            post.setRequestProperty("Content-Type", "application/octet-stream");
            try (OutputStream o = post.getOutputStream()) {
                o.write(body);
            }
            int pstatus = post.getResponseCode();
            String reply;
            try (InputStream in = post.getInputStream()) {
                reply = new String(in.readAllBytes(), StandardCharsets.UTF_8).trim();
            }
            out.append(",\"post\":{\"status\":").append(pstatus).append(",\"sent\":").append(n)
                .append(",\"sha256\":").append(quote(hex(MessageDigest.getInstance("SHA-256").digest(body))))
                .append(",\"reply\":").append(reply).append("}");
        } catch (Exception e) {
            out.append(",\"error\":").append(quote(e.getClass().getName() + ": " + e.getMessage()));
        }
        System.out.println(out.append("}"));
    }
}
