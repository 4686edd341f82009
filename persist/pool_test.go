package persist

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func pooledBox(engine, imageID string) *Box {
	return &Box{Owner: PoolOwner, Engine: engine, Image: "default", Status: "pooled",
		Spec: []byte(fmt.Sprintf(`{"memory_mib":512,"cpus":1,"image_id":%q}`, imageID))}
}

// claimFor is a claim fn giving the box to owner under name.
func claimFor(owner, name string) func(*Box, Usage) error {
	return func(b *Box, _ Usage) error {
		b.Owner, b.Name, b.Status = owner, name, "running"
		b.CreatedAt = time.Now()
		return nil
	}
}

var sel = PoolSelect{Status: "pooled", Engine: "jail", Image: "default", ImageID: "img1"}

// TestClaimConcurrent: 10 pooled boxes, 40 goroutines on two Stores of one
// file claiming at once. Every box is claimed exactly once; the other
// claims find the pool empty (ErrNotFound), nothing else.
func TestClaimConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "boxlite.db")
	stores := []*Store{openTest(t, path), openTest(t, path)}
	ctx := context.Background()
	const pooled, claimers = 10, 40
	for range pooled {
		if err := stores[0].Insert(ctx, pooledBox("jail", "img1")); err != nil {
			t.Fatal(err)
		}
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		got   = map[string]string{} // box id → claimer
		empty int
	)
	for i := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprintf("owner%d", i)
			b, err := stores[i%2].Claim(ctx, sel, UsageQuery{Owner: owner}, claimFor(owner, ""))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, ErrNotFound):
				empty++
			case err != nil:
				t.Errorf("claim %d: %v", i, err)
			default:
				if prev, ok := got[b.ID]; ok {
					t.Errorf("box %s claimed twice: by %s and %s", b.ID, prev, owner)
				}
				got[b.ID] = owner
			}
		}()
	}
	wg.Wait()
	if len(got) != pooled || empty != claimers-pooled {
		t.Fatalf("%d boxes claimed, %d claims found the pool empty; want %d and %d", len(got), empty, pooled, claimers-pooled)
	}
	for id, owner := range got {
		b, err := stores[0].Get(ctx, id)
		if err != nil || b.Owner != owner || b.Status != "running" {
			t.Errorf("box %s: %+v, %v; want owner %s running", id, b, err, owner)
		}
	}
	if rest, _ := stores[1].PoolBoxes(ctx); len(rest) != 0 {
		t.Errorf("%d boxes still pooled", len(rest))
	}
}

// TestClaimSelects: a claim takes only a box of the selected engine, image
// identity and pooled status; a refused claim (admission, name taken)
// leaves the box pooled.
func TestClaimSelects(t *testing.T) {
	s := openTest(t, "")
	ctx := context.Background()
	for _, b := range []*Box{pooledBox("qemu", "img1"), pooledBox("jail", "old"), func() *Box { b := pooledBox("jail", "img1"); b.Status = "creating"; return b }()} {
		if err := s.Insert(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Claim(ctx, sel, UsageQuery{Owner: "a"}, claimFor("a", "")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("claim with no matching box: %v; want ErrNotFound", err)
	}
	want := pooledBox("jail", "img1")
	if err := s.Insert(ctx, want); err != nil {
		t.Fatal(err)
	}
	if err := s.Insert(ctx, &Box{Owner: "a", Name: "taken", Engine: "jail", Image: "default", Status: "running"}); err != nil {
		t.Fatal(err)
	}
	full := errors.New("owner at its limit")
	tests := []struct {
		name string
		fn   func(*Box, Usage) error
		want error
	}{
		{"admission refuses", func(b *Box, u Usage) error {
			if u.OwnerBoxes != 1 {
				return fmt.Errorf("usage %+v: want OwnerBoxes 1", u)
			}
			return full
		}, full},
		{"name taken", claimFor("a", "taken"), ErrNameTaken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Claim(ctx, sel, UsageQuery{Owner: "a"}, tt.fn); !errors.Is(err, tt.want) {
				t.Fatalf("claim: %v; want %v", err, tt.want)
			}
			if b, _ := s.Get(ctx, want.ID); b.Owner != PoolOwner || b.Status != "pooled" {
				t.Fatalf("box after a refused claim: owner %q status %s; want still pooled", b.Owner, b.Status)
			}
		})
	}
	b, err := s.Claim(ctx, sel, UsageQuery{Owner: "a"}, claimFor("a", "mine"))
	if err != nil || b.ID != want.ID || b.Name != "mine" {
		t.Fatalf("claim = %+v, %v; want box %s named mine", b, err, want.ID)
	}
}

// TestPoolsAndUsage: pool records and counts for doctor, and the usage
// count of one owner's live boxes of one engine (a pool's fill).
func TestPoolsAndUsage(t *testing.T) {
	s := openTest(t, "")
	ctx := context.Background()
	for _, st := range []string{"pooled", "pooled", "creating", "stopped"} {
		b := pooledBox("jail", "img1")
		b.Status = st
		if err := s.Insert(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetPoolTarget(ctx, "jail", 3); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPoolError(ctx, "jail", "image missing"); err != nil {
		t.Fatal(err)
	}
	ps, err := s.Pools(ctx)
	if err != nil || len(ps) != 1 {
		t.Fatalf("Pools = %v, %v", ps, err)
	}
	p := ps[0]
	if p.Target != 3 || p.LastError != "image missing" || p.LastErrorAt.IsZero() || p.Boxes["pooled"] != 2 || p.Boxes["creating"] != 1 || p.Boxes["stopped"] != 1 {
		t.Fatalf("pool = %+v", p)
	}
	s.SetPoolError(ctx, "jail", "")
	if ps, _ := s.Pools(ctx); ps[0].LastError != "" || !ps[0].LastErrorAt.IsZero() || ps[0].Target != 3 {
		t.Fatalf("after a success: %+v", ps[0])
	}
	err = s.InsertAdmitted(ctx, newBox("x", ""), UsageQuery{Owner: PoolOwner, Engine: "jail", Live: []string{"pooled", "creating"}}, func(u Usage) error {
		if u.OwnerEngineLive != 3 || u.OwnerBoxes != 4 {
			return fmt.Errorf("usage %+v: want OwnerEngineLive 3, OwnerBoxes 4", u)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
