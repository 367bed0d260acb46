package gateway

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// TestConfigVariables covers each way config.yaml becomes a variable of
// the bridge: the whatsapp: block's mapping and the gateway's additions.
func TestConfigVariables(t *testing.T) {
	tests := []struct {
		name   string
		config string
		want   []Var // each must be in Env with this value and From
		absent []string
	}{
		{
			name:   "dm_policy is lower-cased",
			config: "whatsapp:\n  dm_policy: AllowList\n",
			want:   []Var{{Name: "WHATSAPP_DM_POLICY", Value: "allowlist", From: "config.yaml line 2 (whatsapp.dm_policy)"}},
		},
		{
			// The gateway copies allow_from into the platform's settings,
			// and its allow list, sorted, goes over the mapping's.
			name: "allow_from: a list, typed as PyYAML types it, becomes the gateway's sorted allow list",
			// +1555... is an int to PyYAML (the + goes), 0123 an octal.
			config: "whatsapp:\n  allow_from:\n    - +15551234567\n    - '0123'\n    - 0123\n    - b@s.whatsapp.net\n",
			want:   []Var{{Name: "WHATSAPP_ALLOWED_USERS", Value: "0123,15551234567,83,b@s.whatsapp.net", From: "config.yaml line 2 (whatsapp.allow_from)"}},
		},
		{
			name:   "allow_from: a string is split at commas",
			config: "whatsapp:\n  allow_from: 'b, a'\n",
			want:   []Var{{Name: "WHATSAPP_ALLOWED_USERS", Value: "a,b", From: "config.yaml line 2 (whatsapp.allow_from)"}},
		},
		{
			name:   "group_policy",
			config: "whatsapp:\n  group_policy: Open\n",
			want:   []Var{{Name: "WHATSAPP_GROUP_POLICY", Value: "open", From: "config.yaml line 2 (whatsapp.group_policy)"}},
		},
		{
			name:   "group_allow_from",
			config: "whatsapp:\n  group_allow_from: [g1@g.us, g2@g.us]\n",
			want:   []Var{{Name: "WHATSAPP_GROUP_ALLOWED_USERS", Value: "g1@g.us,g2@g.us", From: "config.yaml line 2 (whatsapp.group_allow_from)"}},
		},
		{
			name:   "require_mention: a YAML 1.1 boolean",
			config: "whatsapp:\n  require_mention: yes\n",
			want:   []Var{{Name: "WHATSAPP_REQUIRE_MENTION", Value: "true", From: "config.yaml line 2 (whatsapp.require_mention)"}},
		},
		{
			name:   "require_mention: a quoted string is lower-cased",
			config: "whatsapp:\n  require_mention: 'Maybe'\n",
			want:   []Var{{Name: "WHATSAPP_REQUIRE_MENTION", Value: "maybe", From: "config.yaml line 2 (whatsapp.require_mention)"}},
		},
		{
			name:   "mention_patterns: JSON as Python writes it",
			config: "whatsapp:\n  mention_patterns: ['@hermes', 'h\u00e9llo', 1]\n",
			want:   []Var{{Name: "WHATSAPP_MENTION_PATTERNS", Value: `["@hermes", "h\u00e9llo", 1]`, From: "config.yaml line 2 (whatsapp.mention_patterns)"}},
		},
		{
			name:   "free_response_chats",
			config: "whatsapp:\n  free_response_chats: [a@g.us, b@g.us]\n",
			want:   []Var{{Name: "WHATSAPP_FREE_RESPONSE_CHATS", Value: "a@g.us,b@g.us", From: "config.yaml line 2 (whatsapp.free_response_chats)"}},
		},
		{
			name:   "without a whatsapp: block, the platform's block under platforms",
			config: "platforms:\n  whatsapp:\n    enabled: true\n    dm_policy: Open\n",
			want:   []Var{{Name: "WHATSAPP_DM_POLICY", Value: "open", From: "config.yaml line 4 (platforms.whatsapp.dm_policy)"}},
		},
		{
			name:   "without a whatsapp: block, gateway.platforms comes first",
			config: "platforms:\n  whatsapp:\n    dm_policy: Open\ngateway:\n  platforms:\n    whatsapp:\n      dm_policy: Disabled\n",
			want:   []Var{{Name: "WHATSAPP_DM_POLICY", Value: "disabled", From: "config.yaml line 7 (gateway.platforms.whatsapp.dm_policy)"}},
		},
		{
			name:   "the block's keys, not its extra, make variables",
			config: "platforms:\n  whatsapp:\n    extra:\n      group_policy: open\n",
			absent: []string{"WHATSAPP_GROUP_POLICY"},
		},
		{
			name:   "the gateway's allow list: extra allow_from, trimmed and sorted",
			config: "platforms:\n  whatsapp:\n    extra:\n      allow_from: [' c ', a, b, a]\n",
			want:   []Var{{Name: "WHATSAPP_ALLOWED_USERS", Value: "a,b,c", From: "config.yaml line 4 (platforms.whatsapp.extra.allow_from)"}},
		},
		{
			name:   "the gateway's allow list: allowFrom, a comma-separated string",
			config: "platforms:\n  whatsapp:\n    extra:\n      allowFrom: 'z, y,,x'\n",
			want:   []Var{{Name: "WHATSAPP_ALLOWED_USERS", Value: "x,y,z", From: "config.yaml line 4 (platforms.whatsapp.extra.allowFrom)"}},
		},
		{
			name:   "the gateway's allow list: empty is left out",
			config: "platforms:\n  whatsapp:\n    extra:\n      allow_from: []\n",
			absent: []string{"WHATSAPP_ALLOWED_USERS"},
		},
		{
			name:   "the gateway's dm policy: from extra, trimmed and lower-cased",
			config: "platforms:\n  whatsapp:\n    extra:\n      dm_policy: ' Open '\n",
			want:   []Var{{Name: "WHATSAPP_DM_POLICY", Value: "open", From: "config.yaml line 4 (platforms.whatsapp.extra.dm_policy)"}},
		},
		{
			name:   "the gateway's reply prefix, copied from the whatsapp: block",
			config: "whatsapp:\n  reply_prefix: '> '\n",
			want:   []Var{{Name: "WHATSAPP_REPLY_PREFIX", Value: "> ", From: "config.yaml line 2 (whatsapp.reply_prefix)"}},
		},
		{
			name:   "the whatsapp: block's keys win over extra",
			config: "whatsapp:\n  reply_prefix: mine\nplatforms:\n  whatsapp:\n    extra:\n      reply_prefix: theirs\n",
			want:   []Var{{Name: "WHATSAPP_REPLY_PREFIX", Value: "mine", From: "config.yaml line 2 (whatsapp.reply_prefix)"}},
		},
		{
			name:   "read receipts",
			config: "platforms:\n  whatsapp:\n    extra:\n      send_read_receipts: 'On'\n",
			want:   []Var{{Name: "WHATSAPP_SEND_READ_RECEIPTS", Value: "true", From: "config.yaml line 4 (platforms.whatsapp.extra.send_read_receipts)"}},
		},
		{
			name: "merge keys and aliases, as PyYAML reads them",
			config: "defaults: &d\n  dm_policy: Open\n  allow_from: &people [a, b]\n" +
				"whatsapp:\n  <<: *d\n  allow_from: *people\n  group_allow_from: *people\n",
			want: []Var{
				{Name: "WHATSAPP_DM_POLICY", Value: "open", From: "config.yaml line 2 (whatsapp.dm_policy)"},
				{Name: "WHATSAPP_ALLOWED_USERS", Value: "a,b", From: "config.yaml line 6 (whatsapp.allow_from)"},
				{Name: "WHATSAPP_GROUP_ALLOWED_USERS", Value: "a,b", From: "config.yaml line 7 (whatsapp.group_allow_from)"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := t.TempDir()
			layout(t, home, map[string]string{"config.yaml": tt.config})
			in := loadHome(t, home)
			noProblems(t, in)
			for _, w := range tt.want {
				got, ok := envVar(in, w.Name)
				if !ok {
					t.Errorf("%s missing from Env %+v", w.Name, in.Env)
					continue
				}
				if got != w {
					t.Errorf("got  %+v\nwant %+v", got, w)
				}
			}
			for _, name := range tt.absent {
				if v, ok := envVar(in, name); ok {
					t.Errorf("%s should not be set: %+v", name, v)
				}
			}
		})
	}
}

// TestDefaultEnv is what the gateway gives a bridge when nothing is
// configured, in order.
func TestDefaultEnv(t *testing.T) {
	home := t.TempDir()
	in := loadHome(t, home)
	noProblems(t, in)
	want := []Var{
		{Name: "WHATSAPP_MODE", Value: "self-chat", From: "default"},
		{Name: "WHATSAPP_SEND_READ_RECEIPTS", Value: "false", From: "default"},
		{Name: "WHATSAPP_DM_POLICY", Value: "pairing", From: "default"},
		{Name: "HERMES_IMAGE_CACHE_DIR", Value: filepath.Join(home, "cache", "images"), From: "default"},
		{Name: "HERMES_AUDIO_CACHE_DIR", Value: filepath.Join(home, "cache", "audio"), From: "default"},
		{Name: "HERMES_DOCUMENT_CACHE_DIR", Value: filepath.Join(home, "cache", "documents"), From: "default"},
	}
	if !reflect.DeepEqual(in.Env, want) {
		t.Errorf("Env:\n got %+v\nwant %+v", in.Env, want)
	}
	if in.Port != 3000 || in.Mode != "self-chat" || in.SendReadReceipts ||
		in.SessionDir != filepath.Join(home, "platforms", "whatsapp", "session") {
		t.Errorf("defaults: %+v", in)
	}
}

func TestLegacyCacheDirs(t *testing.T) {
	home := t.TempDir()
	layout(t, home, map[string]string{"image_cache/a.jpg": "x", "audio_cache/": ""})
	in := loadHome(t, home)
	for name, want := range map[string]Var{
		"HERMES_IMAGE_CACHE_DIR": {Name: "HERMES_IMAGE_CACHE_DIR", Value: filepath.Join(home, "image_cache"), From: "the legacy location, which has content"},
		"HERMES_AUDIO_CACHE_DIR": {Name: "HERMES_AUDIO_CACHE_DIR", Value: filepath.Join(home, "cache", "audio"), From: "default"},
	} {
		if got, _ := envVar(in, name); got != want {
			t.Errorf("got  %+v\nwant %+v", got, want)
		}
	}
}

// TestPrecedence: the sidecar's environment, then .env, then the
// whatsapp: mappings of config.yaml, then the gateway's defaults (see
// TestGatewaySetsOverDotEnv for what the gateway sets over .env).
func TestPrecedence(t *testing.T) {
	home := t.TempDir()
	layout(t, home, map[string]string{
		".env": "WHATSAPP_DM_POLICY=allowlist\nWHATSAPP_GROUP_POLICY=open\nWHATSAPP_REQUIRE_MENTION=\nWHATSAPP_MODE=bot\n",
		"config.yaml": "whatsapp:\n  dm_policy: disabled\n  group_policy: disabled\n  require_mention: true\n" +
			"  allow_from: [a]\n  reply_prefix: x\n",
	})
	in := loadHome(t, home, "WHATSAPP_DM_POLICY", "open", "WHATSAPP_REPLY_PREFIX", "mine")
	noProblems(t, in)
	for _, name := range []string{"WHATSAPP_DM_POLICY", "WHATSAPP_REPLY_PREFIX"} {
		if v, ok := envVar(in, name); ok {
			t.Errorf("%s is the sidecar's and must not be in Env: %+v", name, v)
		}
	}
	for _, w := range []Var{
		{Name: "WHATSAPP_GROUP_POLICY", Value: "open", From: ".env line 2"},
		// An empty variable counts as unset, for the gateway too.
		{Name: "WHATSAPP_REQUIRE_MENTION", Value: "true", From: "config.yaml line 4 (whatsapp.require_mention)"},
		{Name: "WHATSAPP_ALLOWED_USERS", Value: "a", From: "config.yaml line 5 (whatsapp.allow_from)"},
		{Name: "WHATSAPP_MODE", Value: "bot", From: ".env line 4"},
		{Name: "WHATSAPP_SEND_READ_RECEIPTS", Value: "false", From: "default"},
	} {
		if got, _ := envVar(in, w.Name); got != w {
			t.Errorf("got  %+v\nwant %+v", got, w)
		}
	}
	if in.Mode != "bot" || in.ModeFrom != ".env line 4" {
		t.Errorf("mode %q from %q", in.Mode, in.ModeFrom)
	}

	got := in.BridgeEnv([]string{"PATH=/bin", "WHATSAPP_DM_POLICY=open", "WHATSAPP_REPLY_PREFIX=mine", "WA_SIDECAR_TOKEN=t"})
	has := map[string]string{}
	for _, kv := range got {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := has[k]; dup {
			t.Errorf("%s twice in %q", k, got)
		}
		has[k] = v
	}
	for k, v := range map[string]string{"PATH": "/bin", "WHATSAPP_DM_POLICY": "open", "WHATSAPP_REPLY_PREFIX": "mine",
		"WHATSAPP_GROUP_POLICY": "open", "WHATSAPP_MODE": "bot"} {
		if has[k] != v {
			t.Errorf("%s=%q in the bridge's environment, want %q", k, has[k], v)
		}
	}
	if _, ok := has["WA_SIDECAR_TOKEN"]; ok {
		t.Error("the sidecar's token reached the bridge")
	}
}

func TestMode(t *testing.T) {
	tests := []struct {
		name, dotenv string
		sidecar      []string
		mode, from   string
		problem      string
		problemFile  string
		problemLine  int
	}{
		{"default", "", nil, "self-chat", "default", "", "", 0},
		{"sidecar", "WHATSAPP_MODE=self-chat\n", []string{"WHATSAPP_MODE", "bot"}, "bot", "the sidecar's environment", "", "", 0},
		{".env", "# mode\nWHATSAPP_MODE=bot\n", nil, "bot", ".env line 2", "", "", 0},
		{"invalid in .env", "WHATSAPP_MODE=group\n", nil, "self-chat", "default", `WHATSAPP_MODE is "group" (from .env line 1); want self-chat or bot`, ".env", 1},
		{"invalid in the sidecar", "", []string{"WHATSAPP_MODE", "Bot"}, "self-chat", "default", `WHATSAPP_MODE is "Bot" (from the sidecar's environment)`, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := t.TempDir()
			if tt.dotenv != "" {
				layout(t, home, map[string]string{".env": tt.dotenv})
			}
			in := loadHome(t, home, tt.sidecar...)
			if in.Mode != tt.mode || in.ModeFrom != tt.from {
				t.Errorf("mode %q from %q, want %q from %q", in.Mode, in.ModeFrom, tt.mode, tt.from)
			}
			if tt.problem == "" {
				noProblems(t, in)
				return
			}
			file := ""
			if tt.problemFile != "" {
				file = filepath.Join(home, tt.problemFile)
			}
			onlyProblem(t, in, file, tt.problemLine, tt.problem)
		})
	}
}

func TestSendReadReceipts(t *testing.T) {
	for value, want := range map[string]bool{
		"true": true, "yes": true, "'YES'": true, "' on '": true, "1": true, "'1'": true,
		"false": false, "off": false, "0": false, "'nope'": false, "": false,
	} {
		t.Run(value, func(t *testing.T) {
			home := t.TempDir()
			layout(t, home, map[string]string{"config.yaml": "platforms:\n  whatsapp:\n    extra:\n      send_read_receipts: " + value + "\n"})
			in := loadHome(t, home)
			noProblems(t, in)
			if in.SendReadReceipts != want {
				t.Errorf("SendReadReceipts %t, want %t", in.SendReadReceipts, want)
			}
		})
	}
}

// TestReadReceiptsVariable: the gateway gives its bridge its setting,
// whatever its environment says; so .env cannot make the bridge report
// another value, but the sidecar's own environment, which wins, can.
func TestReadReceiptsVariable(t *testing.T) {
	for _, tt := range []struct {
		name, config string
		value, from  string
	}{
		{"set in config.yaml", "platforms:\n  whatsapp:\n    extra:\n      send_read_receipts: true\n",
			"true", "config.yaml line 4 (platforms.whatsapp.extra.send_read_receipts)"},
		{"the default", "", "false", "default"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			home := t.TempDir()
			other := "yes"
			if tt.value == "true" {
				other = "no"
			}
			layout(t, home, map[string]string{".env": "WHATSAPP_SEND_READ_RECEIPTS=" + other + "\n", "config.yaml": tt.config})
			in := loadHome(t, home)
			noProblems(t, in)
			want := Var{Name: "WHATSAPP_SEND_READ_RECEIPTS", Value: tt.value, From: tt.from}
			if got, _ := envVar(in, want.Name); got != want {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}

			in = loadHome(t, home, "WHATSAPP_SEND_READ_RECEIPTS", other)
			onlyProblem(t, in, "", 0, "WHATSAPP_SEND_READ_RECEIPTS (from the sidecar's environment) makes the bridge report sendReadReceipts "+
				strconv.FormatBool(!truthyText(tt.value)), "send_read_receipts is "+tt.value, "would not adopt")
			if v, ok := envVar(in, want.Name); ok {
				t.Errorf("the sidecar's variable must win: %+v", v)
			}
		})
	}
}

// TestGatewaySetsOverDotEnv: what the gateway sets for its bridge from its
// platform settings and its layout goes over its environment, .env
// included; the whatsapp: mappings go only where the variable is unset.
func TestGatewaySetsOverDotEnv(t *testing.T) {
	home := t.TempDir()
	layout(t, home, map[string]string{
		".env": "WHATSAPP_REPLY_PREFIX=from-env\nWHATSAPP_DM_POLICY=open\nWHATSAPP_ALLOWED_USERS=z\n" +
			"WHATSAPP_SEND_READ_RECEIPTS=true\nHERMES_IMAGE_CACHE_DIR=/elsewhere\nWHATSAPP_GROUP_POLICY=open\nWHATSAPP_MODE=bot\n",
		"config.yaml": "platforms:\n  whatsapp:\n    extra:\n      reply_prefix: '> '\n      dm_policy: Allowlist\n" +
			"      allow_from: [b, a]\n      send_read_receipts: false\nwhatsapp:\n  group_policy: disabled\n",
	})
	in := loadHome(t, home)
	noProblems(t, in)
	for _, w := range []Var{
		{Name: "WHATSAPP_REPLY_PREFIX", Value: "> ", From: "config.yaml line 4 (platforms.whatsapp.extra.reply_prefix)"},
		{Name: "WHATSAPP_DM_POLICY", Value: "allowlist", From: "config.yaml line 5 (platforms.whatsapp.extra.dm_policy)"},
		{Name: "WHATSAPP_ALLOWED_USERS", Value: "a,b", From: "config.yaml line 6 (platforms.whatsapp.extra.allow_from)"},
		{Name: "WHATSAPP_SEND_READ_RECEIPTS", Value: "false", From: "config.yaml line 7 (platforms.whatsapp.extra.send_read_receipts)"},
		{Name: "HERMES_IMAGE_CACHE_DIR", Value: filepath.Join(home, "cache", "images"), From: "default"},
		{Name: "WHATSAPP_GROUP_POLICY", Value: "open", From: ".env line 6"},
		{Name: "WHATSAPP_MODE", Value: "bot", From: ".env line 7"},
	} {
		if got, _ := envVar(in, w.Name); got != w {
			t.Errorf("got  %+v\nwant %+v", got, w)
		}
	}
	names := map[string]bool{}
	for _, v := range in.Env {
		if names[v.Name] {
			t.Errorf("%s twice in Env", v.Name)
		}
		names[v.Name] = true
	}
}

// TestGatewayReadsItsEnvironment: without a platform setting the gateway
// takes the dm policy and the allow list from its environment, and gives
// its bridge what it made of them.
func TestGatewayReadsItsEnvironment(t *testing.T) {
	for _, tt := range []struct {
		name, dotenv, config string
		want                 []Var
		absent               []string
	}{
		{name: ".env, as the gateway normalizes it",
			dotenv: "WHATSAPP_DM_POLICY=' Open '\nWHATSAPP_ALLOWED_USERS=' c, a,,b,a '\n",
			want: []Var{{Name: "WHATSAPP_DM_POLICY", Value: "open", From: ".env line 1"},
				{Name: "WHATSAPP_ALLOWED_USERS", Value: "a,b,c", From: ".env line 2"}}},
		{name: "an allow list of nothing is removed",
			dotenv: "WHATSAPP_ALLOWED_USERS=' , '\n", absent: []string{"WHATSAPP_ALLOWED_USERS"}},
		{name: "an empty allow list is removed",
			dotenv: "WHATSAPP_ALLOWED_USERS=\n", absent: []string{"WHATSAPP_ALLOWED_USERS"}},
		{name: "an empty list in the whatsapp: block is removed",
			config: "whatsapp:\n  allow_from: []\n", absent: []string{"WHATSAPP_ALLOWED_USERS"}},
		{name: "an empty dm policy is not the default",
			dotenv: "WHATSAPP_DM_POLICY=\n",
			want:   []Var{{Name: "WHATSAPP_DM_POLICY", Value: "", From: ".env line 1"}}},
		{name: "a mapping of a value the gateway does not take as a setting",
			config: "whatsapp:\n  dm_policy: false\n  allow_from: 0\n",
			want: []Var{{Name: "WHATSAPP_DM_POLICY", Value: "false", From: "config.yaml line 2 (whatsapp.dm_policy)"},
				{Name: "WHATSAPP_ALLOWED_USERS", Value: "0", From: "config.yaml line 3 (whatsapp.allow_from)"}}},
		{name: ".env wins over a mapping",
			dotenv: "WHATSAPP_DM_POLICY=Open\n", config: "whatsapp:\n  dm_policy: false\n",
			want: []Var{{Name: "WHATSAPP_DM_POLICY", Value: "open", From: ".env line 1"}}},
		{name: "an empty reply prefix is set all the same",
			dotenv: "WHATSAPP_REPLY_PREFIX=from-env\n", config: "whatsapp:\n  reply_prefix: ''\n",
			want: []Var{{Name: "WHATSAPP_REPLY_PREFIX", Value: "", From: "config.yaml line 2 (whatsapp.reply_prefix)"}}},
		{name: "a null reply prefix is not set",
			dotenv: "WHATSAPP_REPLY_PREFIX=from-env\n", config: "whatsapp:\n  reply_prefix:\n",
			want: []Var{{Name: "WHATSAPP_REPLY_PREFIX", Value: "from-env", From: ".env line 1"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			home := t.TempDir()
			layout(t, home, map[string]string{".env": tt.dotenv, "config.yaml": tt.config})
			in := loadHome(t, home)
			noProblems(t, in)
			for _, w := range tt.want {
				if got, ok := envVar(in, w.Name); !ok || got != w {
					t.Errorf("got  %+v (%t)\nwant %+v", got, ok, w)
				}
			}
			for _, name := range tt.absent {
				if v, ok := envVar(in, name); ok {
					t.Errorf("%s should not be set: %+v", name, v)
				}
			}
		})
	}
}

func TestSecrets(t *testing.T) {
	home := t.TempDir()
	layout(t, home, map[string]string{".env": "OPENAI_API_KEY=sk-1\nTELEGRAM_BOT_TOKEN=t-2\nDB_PASSWORD=p-3\nSMTP_PASS=p-4\n" +
		"MY_SECRET=s-5\nSECRETS_DIR=s-6\nX_KEY=k-7\nAPIKEYS=plain\nWHATSAPP_MODE=bot\n" +
		"sk-live-999 oops\n\"unclosed=sk-live-998\n"})
	in := loadHome(t, home)
	secret := map[string]bool{"OPENAI_API_KEY": true, "TELEGRAM_BOT_TOKEN": true, "DB_PASSWORD": true, "SMTP_PASS": true,
		"MY_SECRET": true, "SECRETS_DIR": true, "X_KEY": true}
	for _, v := range in.Env {
		if v.Secret != secret[v.Name] {
			t.Errorf("%s: Secret %t", v.Name, v.Secret)
		}
		if strings.Contains(v.From, v.Value) {
			t.Errorf("%s: From %q holds the value", v.Name, v.From)
		}
	}
	if len(in.Problems) != 2 {
		t.Fatalf("want two problems, got:\n%s", problemsText(in))
	}
	for _, p := range in.Problems {
		if strings.Contains(p.Error(), "sk-") {
			t.Errorf("a problem shows what may be a secret: %s", p.Error())
		}
	}
}

// TestShown: doctor prints a value only when it is the bridge's own
// setting and not a credential; any other .env variable may hold one in a
// URL (DATABASE_URL=postgres://user:password@host/db).
func TestShown(t *testing.T) {
	home := t.TempDir()
	layout(t, home, map[string]string{".env": "DATABASE_URL=postgres://u:pw@db/x\nHTTP_PROXY=http://proxy:3128\n" +
		"WHATSAPP_MODE=bot\nHERMES_AUDIO_CACHE_DIR=/srv/audio\nWHATSAPP_CLOUD_ACCESS_TOKEN=t\nHERMES_API_KEY=k\n" +
		"whatsapp_mode=lower\nWHATSAPP_PROXY=socks5://u:pw@proxy:1080\nHERMES_HOME_X=1\n" +
		"HERMES_GIT=see https://ghp_x@github.com/a\nHERMES_CONTACT=a@b.c, https://example.com/@me\n"})
	in := loadHome(t, home)
	want := map[string]bool{"WHATSAPP_MODE": true, "HERMES_HOME_X": true, "WHATSAPP_SEND_READ_RECEIPTS": true,
		"WHATSAPP_DM_POLICY": true, "HERMES_CONTACT": true, "HERMES_IMAGE_CACHE_DIR": true, "HERMES_AUDIO_CACHE_DIR": true, "HERMES_DOCUMENT_CACHE_DIR": true}
	seen := map[string]bool{}
	for _, v := range in.Env {
		seen[v.Name] = true
		if v.Shown() != want[v.Name] {
			t.Errorf("%s: Shown %t", v.Name, v.Shown())
		}
	}
	for _, name := range []string{"DATABASE_URL", "HTTP_PROXY", "WHATSAPP_CLOUD_ACCESS_TOKEN", "HERMES_API_KEY", "whatsapp_mode", "WHATSAPP_PROXY", "HERMES_GIT"} {
		if !seen[name] {
			t.Errorf("%s missing from Env", name)
		}
	}
}

func TestBadYAML(t *testing.T) {
	home := t.TempDir()
	layout(t, home, map[string]string{"config.yaml": "platforms:\n  whatsapp:\n    extra:\n      bridge_port: 3005\n" +
		"whatsapp:\n  allow_from: [a, b\n  dm_policy: open\n"})
	in := loadHome(t, home)
	// The line is the YAML library's, which counts this error's context
	// from 0: the sequence opens on line 6.
	onlyProblem(t, in, filepath.Join(home, "config.yaml"), 5, "is not valid YAML (did not find expected ',' or ']')", "it is ignored")
	if in.Port != 3000 {
		t.Errorf("a file that cannot be parsed counts as empty; port %d", in.Port)
	}
	if v, _ := envVar(in, "WHATSAPP_DM_POLICY"); v.Value != "pairing" {
		t.Errorf("dm policy %+v", v)
	}
}

func TestWrongTypes(t *testing.T) {
	tests := []struct {
		name, config string
		line         int
		problem      string
	}{
		{"top level", "- a\n- b\n", 1, "the top level is a list, not a mapping"},
		{"whatsapp", "whatsapp: [1, 2]\n", 1, "whatsapp is a list, not a mapping; it is ignored"},
		{"gateway", "gateway: on\n", 1, "gateway is a boolean, not a mapping"},
		{"gateway.platforms", "gateway:\n  platforms: 5\n", 2, "gateway.platforms is a number, not a mapping"},
		{"platforms.whatsapp", "platforms:\n  whatsapp: text\n", 2, "platforms.whatsapp is a string, not a mapping"},
		{"extra", "platforms:\n  whatsapp:\n    extra: [1]\n", 3, "platforms.whatsapp.extra is a list, not a mapping; it is ignored here, but the gateway fails on it"},
		{"empty extra", "gateway:\n  platforms:\n    whatsapp:\n      extra:\n", 4, "gateway.platforms.whatsapp.extra is empty, not a mapping"},
		{"allow_from", "whatsapp:\n  allow_from: {a: 1}\n", 2, "whatsapp.allow_from is a mapping, not a list or a single value"},
		{"allow_from item", "whatsapp:\n  allow_from:\n    - a\n    - [b]\n", 4, "whatsapp.allow_from holds a list, not a single value"},
		{"dm_policy", "whatsapp:\n  dm_policy: [a]\n", 2, "whatsapp.dm_policy is a list, not a single value"},
		{"merge", "whatsapp:\n  <<: 5\n", 2, "a merge key (<<) refers to a number"},
		{"not UTF-8", "\xfe\xff\x00a\x00:\x00 \x001\n", 0, "is not UTF-8 text"},
		{"two documents", "a: 1\n---\nb: 2\n", 2, "holds more than one YAML document"},
		{"alias bomb", "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n" +
			"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n" +
			"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nwhatsapp:\n  mention_patterns: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
			1, "expands to too much"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := t.TempDir()
			layout(t, home, map[string]string{"config.yaml": tt.config})
			in := loadHome(t, home)
			onlyProblem(t, in, filepath.Join(home, "config.yaml"), tt.line, tt.problem)
		})
	}
}

func TestUnsafeFiles(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		prepare func(t *testing.T, path string)
		problem string
	}{
		{"world-writable config.yaml", "config.yaml", chmod(0o666), "is writable by every user, so it is not read; fix it with chmod o-w "},
		{"world-writable .env", ".env", chmod(0o646), "is writable by every user, so it is not read; fix it with chmod o-w "},
		{"config.yaml links to a world-writable file", "config.yaml", linkTo(chmod(0o666)), "is writable by every user, so it is not read; fix it with chmod o-w "},
		{".env links to a world-writable file", ".env", linkTo(chmod(0o662)), "is writable by every user, so it is not read; fix it with chmod o-w "},
		{"config.yaml links to a directory", "config.yaml", linkTo(mkdir), "is not a regular file (a directory)"},
		{".env links to a named pipe", ".env", linkTo(mkfifo), "is not a regular file (a named pipe)"},
		{"config.yaml links to a file too large", "config.yaml", linkTo(grow(configLimit + 1)), "is larger than 1 MiB"},
		{"config.yaml is a loop of links", "config.yaml", linkLoop, "symbolic links that loop"},
		{"config.yaml is a directory", "config.yaml", mkdir, "is not a regular file (a directory)"},
		{"config.yaml is too large", "config.yaml", grow(configLimit + 1), "is larger than 1 MiB"},
	}
	content := map[string]string{
		"config.yaml": "platforms:\n  whatsapp:\n    extra:\n      bridge_port: 3009\n",
		".env":        "WHATSAPP_MODE=bot\n",
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := t.TempDir()
			path := filepath.Join(home, tt.file)
			layout(t, home, map[string]string{tt.file: content[tt.file]})
			tt.prepare(t, path)
			in := loadHome(t, home)
			want := tt.problem
			if strings.HasSuffix(want, "chmod o-w ") {
				want += path
			}
			onlyProblem(t, in, path, 0, want)
			if in.Port != 3000 || in.Mode != "self-chat" {
				t.Errorf("the refused file was used: port %d, mode %q", in.Port, in.Mode)
			}
		})
	}
}

// TestFollowsLinks: the gateway opens config.yaml and .env with Python's
// open, which follows a symbolic link (a dotfiles manager's, say); so does
// the sidecar, or the two would disagree on the port and the policy.
func TestFollowsLinks(t *testing.T) {
	home := t.TempDir()
	dotfiles := t.TempDir()
	layout(t, dotfiles, map[string]string{
		"hermes/config.yaml": "platforms:\n  whatsapp:\n    extra:\n      bridge_port: 3111\n",
		"hermes/env":         "WHATSAPP_MODE=bot\n",
	})
	for name, target := range map[string]string{"config.yaml": "hermes/config.yaml", ".env": "hermes/env"} {
		if err := os.Symlink(filepath.Join(dotfiles, target), filepath.Join(home, name)); err != nil {
			t.Fatal(err)
		}
	}
	in := loadHome(t, home)
	noProblems(t, in)
	if in.Port != 3111 || in.PortFrom != "config.yaml line 4 (platforms.whatsapp.extra.bridge_port)" {
		t.Errorf("port %d from %q: config.yaml's link was not followed", in.Port, in.PortFrom)
	}
	if in.Mode != "bot" || in.ModeFrom != ".env line 1" {
		t.Errorf("mode %q from %q: .env's link was not followed", in.Mode, in.ModeFrom)
	}

	// A link that leads nowhere is a missing file, as Path.exists says.
	dangling := t.TempDir()
	for _, name := range []string{"config.yaml", ".env"} {
		if err := os.Symlink(filepath.Join(dangling, "gone", name), filepath.Join(dangling, name)); err != nil {
			t.Fatal(err)
		}
	}
	in = loadHome(t, dangling)
	noProblems(t, in)
	if in.Port != 3000 || in.Mode != "self-chat" {
		t.Errorf("dangling links: port %d, mode %q", in.Port, in.Mode)
	}
}

func TestBridgeEnv(t *testing.T) {
	in := Install{Env: []Var{
		{Name: "A", Value: "from-env-file"},
		{Name: "B", Value: "b"},
		{Name: "EMPTY", Value: "filled"},
		{Name: "WA_SIDECAR_TOKEN_FILE", Value: "/never"},
	}}
	got := in.BridgeEnv([]string{"PATH=/bin", "A=mine", "WA_SIDECAR_TOKEN=secret", "WA_SIDECAR_TOKEN_FILE=/run/t", "EMPTY=", "HOME=/u"})
	want := []string{"PATH=/bin", "A=mine", "HOME=/u", "B=b", "EMPTY=filled"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("BridgeEnv:\n got %q\nwant %q", got, want)
	}
}

func TestMakeCacheDirs(t *testing.T) {
	home := t.TempDir()
	in := loadHome(t, home)
	if err := in.MakeCacheDirs(); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"images", "audio", "documents"} {
		st, err := os.Stat(filepath.Join(home, "cache", sub))
		if err != nil {
			t.Fatal(err)
		}
		if !st.IsDir() || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %s", sub, st.Mode())
		}
	}
	layout(t, home, map[string]string{"blocked": "a file"})
	in.Env = []Var{{Name: "HERMES_AUDIO_CACHE_DIR", Value: filepath.Join(home, "blocked", "audio")}}
	if err := in.MakeCacheDirs(); err == nil || !strings.Contains(err.Error(), "HERMES_AUDIO_CACHE_DIR") {
		t.Errorf("want an error naming the variable, got %v", err)
	}
}

func TestProblemError(t *testing.T) {
	for _, tt := range []struct {
		p    Problem
		want string
	}{
		{Problem{File: "/h/.env", Line: 3, Message: "m"}, "/h/.env:3: m"},
		{Problem{File: "/h/config.yaml", Message: "m"}, "/h/config.yaml: m"},
		{Problem{Message: "m"}, "m"},
	} {
		if got := tt.p.Error(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.p, got, tt.want)
		}
	}
}
