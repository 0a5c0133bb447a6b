// WWW-Authenticate parsing (RFC 9110 §11.6.1 and what registries really send, docs/protocol.md#upstream-authentication).
import t from 'tap'
import { parseChallenges, type Challenge } from '../../upstream/challenge.js'

t.test('parseChallenges', async (t) => {
  const cases: [string, string | string[] | undefined, Challenge[]][] = [
    ['no header', undefined, []],
    ['empty header', '', []],
    [
      "Docker Hub's challenge",
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
      [
        {
          scheme: 'bearer',
          params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' },
        },
      ],
    ],
    [
      'gcr.io: unquoted values',
      'Bearer realm=https://gcr.io/v2/token,service=gcr.io,scope=repository:google-containers/pause:pull',
      [{ scheme: 'bearer', params: { realm: 'https://gcr.io/v2/token', service: 'gcr.io', scope: 'repository:google-containers/pause:pull' } }],
    ],
    [
      'quay.io: no scope',
      'Bearer realm="https://quay.io/v2/auth",service="quay.io"',
      [{ scheme: 'bearer', params: { realm: 'https://quay.io/v2/auth', service: 'quay.io' } }],
    ],
    [
      'error="insufficient_scope", and a scope containing a comma inside quotes',
      'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:org/app:pull,push",error="insufficient_scope"',
      [
        {
          scheme: 'bearer',
          params: { realm: 'https://ghcr.io/token', service: 'ghcr.io', scope: 'repository:org/app:pull,push', error: 'insufficient_scope' },
        },
      ],
    ],
    ['Basic realm', 'Basic realm="Registry Realm"', [{ scheme: 'basic', params: { realm: 'Registry Realm' } }]],
    [
      'escaped quotes and backslashes in a quoted value',
      'Bearer realm="https://r/token",error_description="the \\"pull\\" scope is a \\\\ must"',
      [{ scheme: 'bearer', params: { realm: 'https://r/token', error_description: 'the "pull" scope is a \\ must' } }],
    ],
    [
      'several challenges in one header',
      'Basic realm="basic-realm", Bearer realm="https://auth.example/token",service="example"',
      [
        { scheme: 'basic', params: { realm: 'basic-realm' } },
        { scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'example' } },
      ],
    ],
    [
      'several challenges, Bearer first, with spaces after commas',
      'Bearer realm="https://a/token", service="a", Basic realm="b"',
      [
        { scheme: 'bearer', params: { realm: 'https://a/token', service: 'a' } },
        { scheme: 'basic', params: { realm: 'b' } },
      ],
    ],
    [
      'array of headers (one challenge each)',
      ['Basic realm="r"', 'Bearer realm="https://a/token",service="s"'],
      [
        { scheme: 'basic', params: { realm: 'r' } },
        { scheme: 'bearer', params: { realm: 'https://a/token', service: 's' } },
      ],
    ],
    [
      'scheme and parameter names are case-insensitive',
      'BEARER Realm="https://a/token",SERVICE="s"',
      [{ scheme: 'bearer', params: { realm: 'https://a/token', service: 's' } }],
    ],
    [
      'whitespace around "=" and ","',
      'Bearer realm = "https://a/token" , service = "s"',
      [{ scheme: 'bearer', params: { realm: 'https://a/token', service: 's' } }],
    ],
    ['empty quoted value', 'Bearer realm="https://a/token",scope=""', [{ scheme: 'bearer', params: { realm: 'https://a/token', scope: '' } }]],
    ['a scheme alone', 'Negotiate', [{ scheme: 'negotiate', params: {} }]],
    [
      'the RFC 9110 §11.6.1 example (unquoted param, escaped quotes, two challenges)',
      'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"',
      [
        { scheme: 'newauth', params: { realm: 'apps', type: '1', title: 'Login to "apps"' } },
        { scheme: 'basic', params: { realm: 'simple' } },
      ],
    ],
    // RFC 9110 §5.6.1: a recipient must parse and ignore a reasonable number of empty list elements.
    ['empty list element before the first challenge is ignored', ', Bearer realm="https://a/token"', [{ scheme: 'bearer', params: { realm: 'https://a/token' } }]],
    [
      'empty list element between two challenges is ignored',
      'Basic realm="x",  , Bearer realm="https://a/token"',
      [
        { scheme: 'basic', params: { realm: 'x' } },
        { scheme: 'bearer', params: { realm: 'https://a/token' } },
      ],
    ],
    ['empty list element between two parameters is ignored', 'Bearer realm="https://a/token",,service="s"', [{ scheme: 'bearer', params: { realm: 'https://a/token', service: 's' } }]],
  ]
  for (const [why, header, expect] of cases) t.strictSame(parseChallenges(header), expect, why)
})
