package k8s

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
)

func testEngine(cfg Config) *Engine {
	if cfg.AgentImage == "" {
		cfg.AgentImage = AgentImageRepo + ":test"
	}
	if cfg.PullPolicy == "" {
		cfg.PullPolicy = "IfNotPresent"
	}
	return &Engine{cfg: cfg, ns: "boxes"}
}

func TestPodNames(t *testing.T) {
	a := sandbox.Spec{ID: "01jabc", Name: "work"}
	if got := podName(sandbox.Spec{ID: "01jabc"}, "alice"); got != "box-01jabc" {
		t.Errorf("unnamed pod name = %q", got)
	}
	// A named box's pod name is the same through every server (so the
	// API's AlreadyExists keeps names unique), and differs per owner.
	if podName(a, "alice") != podName(sandbox.Spec{ID: "01jother", Name: "work"}, "alice") {
		t.Error("the same owner and name gave different pod names")
	}
	if podName(a, "alice") == podName(a, "bob") {
		t.Error("two owners' boxes of one name share a pod name")
	}
	// Owners are any string: the separator keeps ("a", "b\x00c") apart from ("a\x00b", "c").
	if podName(sandbox.Spec{Name: "c"}, "a\x00b") == podName(sandbox.Spec{Name: "b\x00c"}, "a") {
		t.Error("owner/name boundary is ambiguous")
	}
	if n := podName(a, strings.Repeat("x", 5000)); len(n) > 63 {
		t.Errorf("pod name %q is longer than a DNS label", n)
	}
}

func TestPodSpec(t *testing.T) {
	e := testEngine(Config{RuntimeClass: "kata", AgentImage: "agent:1"})
	spec := sandbox.Spec{ID: "01jabc", Name: "my_box", Owner: "tenant a", Image: "python:3.12", CPUs: 2, MemoryMiB: 768, DiskMiB: 2048,
		Env: map[string]string{"B": "2", "A": "1"}}
	p := e.pod(spec, spec.Owner)
	if p.Namespace != "boxes" || p.Spec.RuntimeClassName == nil || *p.Spec.RuntimeClassName != "kata" {
		t.Errorf("namespace %q runtime class %v", p.Namespace, p.Spec.RuntimeClassName)
	}
	if p.Spec.AutomountServiceAccountToken == nil || *p.Spec.AutomountServiceAccountToken {
		t.Error("the box pod must not get a service account token (code in the box would hold cluster credentials)")
	}
	if p.Spec.Hostname != "" {
		t.Errorf("hostname %q set from a name that is no DNS label", p.Spec.Hostname)
	}
	c := p.Spec.Containers[0]
	if c.Image != "python:3.12" || c.Command[0] != "/boxlite/boxlite-guest" || !strings.Contains(strings.Join(c.Command, " "), "tcp:127.0.0.1:") {
		t.Errorf("box container %v %v", c.Image, c.Command)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage} {
		lim, req := c.Resources.Limits[r], c.Resources.Requests[r]
		if lim.IsZero() || lim.Cmp(req) != 0 {
			t.Errorf("%s: request %v limit %v (want equal, set)", r, req.String(), lim.String())
		}
	}
	if m := c.Resources.Limits[corev1.ResourceMemory]; m.Value() != 768<<20 {
		t.Errorf("memory limit %v", m.String())
	}
	if c.Env[0].Name != "BOXLITE_BOX_ID" || c.Env[1].Name != "A" || c.Env[2].Name != "B" {
		t.Errorf("env %v (want the box id, then sorted)", c.Env)
	}
	if p.Spec.InitContainers[0].Image != "agent:1" {
		t.Errorf("init image %q", p.Spec.InitContainers[0].Image)
	}
	if p.Labels[labelName] != "my_box" || p.Labels[labelID] != spec.ID || p.Labels[labelOwner] != ownerHash("tenant a") {
		t.Errorf("labels %v", p.Labels)
	}
	if l := boxLabels(sandbox.Spec{ID: "x", Name: "ends-with-"}, "o"); l[labelName] != "" {
		t.Errorf("a name that is no label value was put in a label: %v", l)
	}
	got, owner, ok := boxFromObject(p.ObjectMeta)
	if !ok || owner != "tenant a" || got.ID != spec.ID || got.Name != spec.Name || got.CPUs != 2 || got.Image != spec.Image {
		t.Errorf("box read back: %+v owner %q ok %v", got, owner, ok)
	}
}

// An owner annotation edited to another tenant's (by anyone who may edit
// pods) must not make the box that tenant's: the owner label is a hash the
// annotation has to match.
func TestBoxFromObjectRejectsForgedOwner(t *testing.T) {
	e := testEngine(Config{})
	p := e.pod(sandbox.Spec{ID: "01jabc", Owner: "alice", Image: "x", CPUs: 1, MemoryMiB: 64}, "alice")
	p.Annotations[annotOwner] = "bob"
	if _, _, ok := boxFromObject(p.ObjectMeta); ok {
		t.Error("a pod whose owner annotation does not match its owner label was accepted")
	}
	p.Labels[labelManaged] = "someone-else"
	p.Annotations[annotOwner] = "alice"
	if _, _, ok := boxFromObject(p.ObjectMeta); ok {
		t.Error("a pod not managed by boxlite-mcp was accepted")
	}
}

func TestNetworkPolicy(t *testing.T) {
	e := testEngine(Config{})
	off, err := e.networkPolicy(sandbox.Spec{ID: "01j"}, "o")
	if err != nil || len(off.Spec.PolicyTypes) != 2 || len(off.Spec.Egress) != 0 || len(off.Spec.Ingress) != 0 {
		t.Fatalf("network off: %+v %v (want deny-all ingress and egress)", off.Spec, err)
	}
	// network: true is public unicast, as on every engine: a box must not
	// reach the cloud metadata service, the API server or other pods.
	on, _ := e.networkPolicy(sandbox.Spec{ID: "01j", Network: true}, "o")
	if len(on.Spec.PolicyTypes) != 2 || len(on.Spec.Ingress) != 0 || len(on.Spec.Egress) != 2 {
		t.Fatalf("network on: %+v (want ingress denied, egress to public addresses and DNS)", on.Spec)
	}
	v4 := on.Spec.Egress[0].To[0].IPBlock
	for _, must := range []string{"169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "100.64.0.0/10"} {
		if !slices.Contains(v4.Except, must) {
			t.Errorf("network on: %s is reachable (except %v)", must, v4.Except)
		}
	}
	if v6 := on.Spec.Egress[0].To[1].IPBlock; v6.CIDR != "::/0" || !slices.Contains(v6.Except, "fc00::/7") || slices.Contains(v6.Except, "::/0") {
		t.Errorf("network on, IPv6: %+v", v6)
	}
	if dns := on.Spec.Egress[1]; len(dns.To) != 0 || dns.Ports[0].Port.IntValue() != 53 {
		t.Errorf("network on, DNS rule: %+v", dns)
	}
	allow, err := e.networkPolicy(sandbox.Spec{ID: "01j", Network: true, NetworkAllow: []string{"192.0.2.7:443", "198.51.100.0/24", "2001:db8::1"}}, "o")
	if err != nil || len(allow.Spec.Egress) != 3 {
		t.Fatalf("allow list: %+v %v", allow.Spec.Egress, err)
	}
	if r := allow.Spec.Egress[0]; r.To[0].IPBlock.CIDR != "192.0.2.7/32" || len(r.Ports) != 2 || r.Ports[0].Port.IntValue() != 443 {
		t.Errorf("ip:port rule %+v", r)
	}
	if r := allow.Spec.Egress[2]; r.To[0].IPBlock.CIDR != "2001:db8::1/128" || len(r.Ports) != 0 {
		t.Errorf("ipv6 rule %+v", r)
	}
	if _, err := e.networkPolicy(sandbox.Spec{ID: "01j", Network: true, NetworkAllow: []string{"pypi.org"}}, "o"); err == nil || !strings.Contains(err.Error(), "no host names") {
		t.Errorf("a host name in the allow list: %v (want a clear refusal)", err)
	}
}

func TestImageRef(t *testing.T) {
	e := testEngine(Config{})
	if _, err := e.ImageRef("default"); err == nil || !strings.Contains(err.Error(), "--k8s-default-image") {
		t.Errorf("default without a default image: %v", err)
	}
	e.cfg.DefaultImage = "registry.example/box:1"
	if got, _ := e.ImageRef(""); got != "registry.example/box:1" {
		t.Errorf("default image = %q", got)
	}
	if _, err := e.ImageRef("UPPER CASE"); err == nil {
		t.Error("a malformed reference was accepted")
	}
}
