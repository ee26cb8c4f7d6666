// Interop peer: npm's certified oidc-provider (pinned in package.json) with
// devInteractions login and consent, the device flow (RFC 8628, for
// `edge login`), a public PKCE-only client and a confidential client, its default claims behaviour (in the code flow the
// ID token carries no profile claims: email and name come from UserInfo),
// and Back-Channel Logout to BACKCHANNEL_URI. Listens on a free loopback
// port and prints "READY <issuer>" once it accepts requests. Test use only.
import net from 'node:net';
import Provider from 'oidc-provider';

// The test harness may stop reading our output; never die of EPIPE.
process.stdout.on('error', () => {});
process.stderr.on('error', () => {});

const redirect = process.env.REDIRECT_URI;
const secret = process.env.CONFIDENTIAL_SECRET;
const backchannel = process.env.BACKCHANNEL_URI;
if (!redirect || !secret || !backchannel) {
  console.error('REDIRECT_URI, CONFIDENTIAL_SECRET and BACKCHANNEL_URI are required');
  process.exit(2);
}

const port = await new Promise((resolve, reject) => {
  const probe = net.createServer();
  probe.on('error', reject);
  probe.listen(0, '127.0.0.1', () => {
    const { port: p } = probe.address();
    probe.close(() => resolve(p));
  });
});
const issuer = `http://127.0.0.1:${port}`;

const common = {
  redirect_uris: [redirect],
  grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code'],
  response_types: ['code'],
  backchannel_logout_uri: backchannel,
  backchannel_logout_session_required: true,
};

const provider = new Provider(issuer, {
  clients: [
    { client_id: 'public-client', token_endpoint_auth_method: 'none', ...common },
    {
      client_id: 'confidential-client',
      client_secret: secret,
      token_endpoint_auth_method: 'client_secret_basic',
      ...common,
    },
  ],
  pkce: { required: () => true },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return { sub, email: `${sub}@example.test`, email_verified: true, name: `User ${sub}` };
      },
    };
  },
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    deviceFlow: { enabled: true },
  },
  cookies: { keys: ['edge-interop-test-only-cookie-key'] },
});

provider.on('backchannel.error', (err, client) => console.error(`backchannel to ${client.clientId} failed: ${err}`));
const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
