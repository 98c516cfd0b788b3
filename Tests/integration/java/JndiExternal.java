// A JNDI client that logs in with its certificate, as a Java application would: the JDK's
// own LDAP provider, JSSE with the javax.net.ssl.* keystore and truststore, and SASL
// EXTERNAL (com.sun.security.sasl), over LDAPS or StartTLS.
//
//     java -Djavax.net.ssl.keyStore=... (as JndiSearch) -cp DIR JndiExternal URL ldaps|starttls
//
// ldaps:    ldaps://HOST:PORT with Context.SECURITY_AUTHENTICATION = "EXTERNAL".
// starttls: ldap://HOST:PORT, StartTlsRequest + StartTlsResponse.negotiate(), then
//           EXTERNAL added to the environment: the next operation binds with it.
// Then Who am I? (RFC 4532) and a search for bob's mail, printed as "whoami: ..." and
// "mail: ..." (anonymous may not read mail in the test directory). Exit 1 on any failure.
import java.util.Hashtable;
import javax.naming.Context;
import javax.naming.NamingEnumeration;
import javax.naming.NamingException;
import javax.naming.directory.Attribute;
import javax.naming.directory.SearchControls;
import javax.naming.directory.SearchResult;
import javax.naming.ldap.ExtendedRequest;
import javax.naming.ldap.ExtendedResponse;
import javax.naming.ldap.InitialLdapContext;
import javax.naming.ldap.LdapContext;
import javax.naming.ldap.StartTlsRequest;
import javax.naming.ldap.StartTlsResponse;

public final class JndiExternal {
    /** Who am I? (RFC 4532): no request value; the response value is the authzId. */
    static final class WhoAmI implements ExtendedRequest, ExtendedResponse {
        private String authzId = "";

        public String getID() { return "1.3.6.1.4.1.4203.1.11.3"; }

        public byte[] getEncodedValue() { return authzId.isEmpty() ? null : authzId.getBytes(); }

        public ExtendedResponse createExtendedResponse(String id, byte[] value, int offset, int length) {
            WhoAmI response = new WhoAmI();
            response.authzId = value == null ? "" : new String(value, offset, length, java.nio.charset.StandardCharsets.UTF_8);
            return response;
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: JndiExternal URL ldaps|starttls");
            System.exit(2);
        }
        boolean startTls = args[1].equals("starttls");
        Hashtable<String, String> env = new Hashtable<>();
        env.put(Context.INITIAL_CONTEXT_FACTORY, "com.sun.jndi.ldap.LdapCtxFactory");
        env.put(Context.PROVIDER_URL, args[0]);
        env.put(Context.SECURITY_AUTHENTICATION, startTls ? "none" : "EXTERNAL");
        env.put("com.sun.jndi.ldap.connect.pool", "false");
        env.put("com.sun.jndi.ldap.connect.timeout", "10000");
        env.put("com.sun.jndi.ldap.read.timeout", "10000");
        LdapContext ctx = new InitialLdapContext(env, null);
        StartTlsResponse tls = null;
        try {
            if (startTls) {
                tls = (StartTlsResponse) ctx.extendedOperation(new StartTlsRequest());
                tls.negotiate();
                ctx.addToEnvironment(Context.SECURITY_AUTHENTICATION, "EXTERNAL");
            }
            WhoAmI who = (WhoAmI) ctx.extendedOperation(new WhoAmI());
            System.out.println("whoami: " + who.authzId);
            SearchControls controls = new SearchControls();
            controls.setSearchScope(SearchControls.SUBTREE_SCOPE);
            controls.setReturningAttributes(new String[] {"mail"});
            NamingEnumeration<SearchResult> results = ctx.search("dc=example,dc=com", "(uid=bob)", controls);
            while (results.hasMore()) {
                Attribute mail = results.next().getAttributes().get("mail");
                System.out.println("mail: " + (mail == null ? "(none)" : mail.get()));
            }
            results.close();
        } catch (NamingException e) {
            System.out.println("failed: " + e);
            System.exit(1);
        } finally {
            if (tls != null) {
                tls.close();
            }
            ctx.close();
        }
    }
}
