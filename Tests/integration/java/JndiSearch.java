// A real JNDI LDAPS client, as a Java application would use it: the JDK's own LDAP
// provider (com.sun.jndi.ldap.LdapCtxFactory) and JSSE, the client certificate and trust
// taken from the standard javax.net.ssl.* system properties.
//
//     java -Djavax.net.ssl.keyStore=alice.p12 -Djavax.net.ssl.keyStorePassword=... \
//          -Djavax.net.ssl.keyStoreType=PKCS12 -Djavax.net.ssl.trustStore=trust.p12 \
//          -Djavax.net.ssl.trustStorePassword=... -Djavax.net.ssl.trustStoreType=PKCS12 \
//          -cp DIR JndiSearch ldaps://127.0.0.1:PORT SESSIONS [FILTER]
//
// Runs SESSIONS sessions in a row, each a fresh InitialDirContext (a new TCP and TLS
// connection, no pooling): anonymous bind, one subtree search under dc=example,dc=com,
// print every DN found as "session N: DN", then ctx.close(), which is where the JDK ends
// the TLS session with its closure alerts. Exit code 1 if any session failed or found
// nothing.
import java.util.Hashtable;
import javax.naming.Context;
import javax.naming.NamingEnumeration;
import javax.naming.NamingException;
import javax.naming.directory.InitialDirContext;
import javax.naming.directory.SearchControls;
import javax.naming.directory.SearchResult;

public final class JndiSearch {
    public static void main(String[] args) {
        if (args.length < 2) {
            System.err.println("usage: JndiSearch ldaps://HOST:PORT SESSIONS [FILTER]");
            System.exit(2);
        }
        String url = args[0];
        int sessions = Integer.parseInt(args[1]);
        String filter = args.length > 2 ? args[2] : "(uid=alice)";
        int failed = 0;
        for (int i = 1; i <= sessions; i++) {
            try {
                if (search(url, filter, i) == 0) {
                    System.out.println("session " + i + ": nothing found");
                    failed++;
                }
            } catch (NamingException e) {
                System.out.println("session " + i + ": failed: " + e);
                failed++;
            }
        }
        System.out.println("sessions=" + sessions + " failed=" + failed);
        System.exit(failed == 0 ? 0 : 1);
    }

    private static int search(String url, String filter, int session) throws NamingException {
        Hashtable<String, String> env = new Hashtable<>();
        env.put(Context.INITIAL_CONTEXT_FACTORY, "com.sun.jndi.ldap.LdapCtxFactory");
        env.put(Context.PROVIDER_URL, url);
        env.put(Context.SECURITY_AUTHENTICATION, "none");
        // A fresh connection each time: the pool would hand back the last one.
        env.put("com.sun.jndi.ldap.connect.pool", "false");
        env.put("com.sun.jndi.ldap.connect.timeout", "10000");
        env.put("com.sun.jndi.ldap.read.timeout", "10000");
        InitialDirContext ctx = new InitialDirContext(env);
        int found = 0;
        try {
            SearchControls controls = new SearchControls();
            controls.setSearchScope(SearchControls.SUBTREE_SCOPE);
            controls.setReturningAttributes(new String[] {"cn"});
            NamingEnumeration<SearchResult> results = ctx.search("dc=example,dc=com", filter, controls);
            while (results.hasMore()) {
                System.out.println("session " + session + ": " + results.next().getNameInNamespace());
                found++;
            }
            results.close();
        } finally {
            ctx.close();
        }
        return found;
    }
}
