package dashboard

//lint:file-ignore SA1019 as in dashboard.go: the classic dashboard schema on purpose

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

const committed = "../grafana/greyhold.json"

// TestCommittedJSON: deploy/grafana/greyhold.json is what the table builds.
func TestCommittedJSON(t *testing.T) {
	want, err := JSON()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(committed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not what package dashboard builds: run make dashboard and commit it", committed)
	}
}

// TestSchema: the committed JSON reads back through the SDK's strict
// decoder (no unknown field, none of the wrong type, none missing), which
// follows the schema Grafana imports.
func TestSchema(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	b, err := os.ReadFile(committed)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard.Dashboard
	err = d.UnmarshalJSONStrict(b)
	// It returns an empty cog.BuildErrors, not nil, when all is well.
	if be, ok := err.(cog.BuildErrors); ok && len(be) == 0 {
		err = nil
	}
	if err != nil {
		t.Fatalf("%s: %v", committed, err)
	}
	if d.Uid == nil || *d.Uid != UID {
		t.Errorf("uid %v, want %q", d.Uid, UID)
	}
}

type gridPos struct{ H, W, X, Y int }

// TestLayout: on the 24-column grid, no panel overlaps another or leaves
// the grid; ids are unique; every panel says what to read in it and
// queries through the data source variable, which is a Prometheus one.
func TestLayout(t *testing.T) {
	b, err := os.ReadFile(committed)
	if err != nil {
		t.Fatal(err)
	}
	type ds struct{ Type, UID string }
	var d struct {
		Panels []struct {
			ID          int
			Type, Title string
			Description string
			GridPos     gridPos
			Datasource  *ds
			Targets     []struct {
				Datasource ds
				Expr       string
			}
		}
		Templating struct {
			List []struct {
				Type, Name string
				Query      any
				Datasource *ds
			}
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	const uid = "${datasource}"
	var dsVar bool
	for _, v := range d.Templating.List {
		switch {
		case v.Type == "datasource" && v.Name == "datasource":
			dsVar = v.Query == "prometheus"
		case v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != uid):
			t.Errorf("variable %s does not query through ${datasource}", v.Name)
		}
	}
	if !dsVar {
		t.Error("no Prometheus data source variable named datasource")
	}
	ids := map[int]bool{}
	var cells [][24]string
	panels := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 || g.Y < 0 {
			t.Errorf("panel %q: gridPos %+v off the grid", p.Title, g)
			continue
		}
		for len(cells) < g.Y+g.H {
			cells = append(cells, [24]string{})
		}
		for y := g.Y; y < g.Y+g.H; y++ {
			for x := g.X; x < g.X+g.W; x++ {
				if o := cells[y][x]; o != "" {
					t.Errorf("panel %q overlaps %q at (%d, %d)", p.Title, o, x, y)
				}
				cells[y][x] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		panels++
		if p.Description == "" {
			t.Errorf("panel %q has no description", p.Title)
		}
		if p.Datasource == nil || p.Datasource.UID != uid || p.Datasource.Type != "prometheus" {
			t.Errorf("panel %q: data source %+v, want the prometheus %s", p.Title, p.Datasource, uid)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if q.Datasource.UID != uid || q.Expr == "" {
				t.Errorf("panel %q: a query without ${datasource} or without an expression", p.Title)
			}
		}
	}
	// The panels the README describes.
	for _, title := range []string{"Decisions by reason", "Defers/s", "Retry delay", "Triplets by state", "Evictions and expiry",
		"WAL fsync latency", "Snapshot age", "Open connections", "Not logged and fail-open"} {
		found := false
		for _, p := range d.Panels {
			found = found || p.Title == title
		}
		if !found {
			t.Errorf("no panel %q", title)
		}
	}
	for _, p := range d.Panels {
		if p.Title == "Retry delay" && p.Type != "heatmap" {
			t.Errorf("Retry delay is a %s, want a heatmap", p.Type)
		}
	}
}
