package chserver

import (
	"strings"
	"testing"
)

func TestClusterRemoteServers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster Cluster
		want    string // a substring of the section, or of the error
		wantErr bool
	}{
		{"none", Cluster{}, "", false},
		{"two shards", Cluster{Name: "tg", Shards: []string{"127.0.0.1:9001", "127.0.0.1:9002"}},
			"<remote_servers><tg>\n    <shard><replica><host>127.0.0.1</host><port>9001</port></replica></shard>\n" +
				"    <shard><replica><host>127.0.0.1</host><port>9002</port></replica></shard>\n  </tg></remote_servers>", false},
		{"no shards", Cluster{Name: "tg"}, "at least one shard", true},
		{"bad name", Cluster{Name: "<tg>", Shards: []string{"127.0.0.1:9001"}}, "want a name", true},
		{"no port", Cluster{Name: "tg", Shards: []string{"127.0.0.1"}}, "shard \"127.0.0.1\"", true},
		{"markup in host", Cluster{Name: "tg", Shards: []string{"<x>:9001"}}, "want host:port", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cluster.remoteServers()
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %q, %v; want an error with %q", got, err, tc.want)
				}
				return
			}
			if err != nil || !strings.Contains(got, tc.want) || (tc.want == "" && got != "") {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
