package k8s

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/boxlite-ai/boxlite-mcp/sandbox"
	"github.com/boxlite-ai/boxlite-mcp/sandbox/network"
)

// Labels and annotations of a box's objects.
const (
	labelManaged   = "app.kubernetes.io/managed-by"
	managedBy      = "boxlite-mcp"
	labelID        = "boxlite.dev/id"
	labelOwner     = "boxlite.dev/owner" // a hash: owners are any string
	labelName      = "boxlite.dev/name"  // when the name is a valid label value (else only the annotation)
	annotOwner     = "boxlite.dev/owner"
	annotName      = "boxlite.dev/name"
	annotSpec      = "boxlite.dev/spec"
	agentVolume    = "boxlite"
	agentDir       = "/boxlite"
	boxContainer   = "box"
	initContainer  = "boxlite-agent"
	filesMountPath = "/workspace"
)

// ownerHash is an owner's label value (label values are short and plain).
func ownerHash(owner string) string {
	sum := sha256.Sum256([]byte("boxlite-owner\x00" + owner))
	return hex.EncodeToString(sum[:])[:40]
}

// podName is a box's pod name. A named box's is derived from its owner and
// name, so two servers creating the same name collide on AlreadyExists.
func podName(spec sandbox.Spec, owner string) string {
	if spec.Name == "" {
		return "box-" + spec.ID
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "boxlite-name\x00%d:%s%s", len(owner), owner, spec.Name))
	return "box-n-" + hex.EncodeToString(sum[:])[:24]
}

// claimName is the PersistentVolumeClaim of a box's files.
func claimName(spec sandbox.Spec) string { return "box-" + spec.ID + "-files" }

func boxLabels(spec sandbox.Spec, owner string) map[string]string {
	l := map[string]string{labelManaged: managedBy, labelID: spec.ID, labelOwner: ownerHash(owner)}
	if spec.Name != "" && len(validation.IsValidLabelValue(spec.Name)) == 0 {
		l[labelName] = spec.Name
	}
	return l
}

func boxAnnotations(spec sandbox.Spec, owner string) map[string]string {
	a := map[string]string{annotOwner: owner, annotSpec: string(sandbox.RemoteSpecJSON(spec))}
	if spec.Name != "" {
		a[annotName] = spec.Name
	}
	return a
}

// pod is the box's Pod.
func (e *Engine) pod(spec sandbox.Spec, owner string) *corev1.Pod {
	no, yes := false, true
	env := []corev1.EnvVar{{Name: "BOXLITE_BOX_ID", Value: spec.ID}}
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		env = append(env, corev1.EnvVar{Name: k, Value: spec.Env[k]})
	}
	cpu := resource.MustParse(strconv.Itoa(spec.CPUs))
	mem := resource.MustParse(fmt.Sprintf("%dMi", spec.MemoryMiB))
	disk := resource.MustParse(fmt.Sprintf("%dMi", max(spec.DiskMiB, sandbox.MinDiskMiB)))
	limits := corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourceMemory: mem, corev1.ResourceEphemeralStorage: disk}
	agentLimit := resource.MustParse("64Mi")
	grace := int64(10)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName(spec, owner), Namespace: e.ns, Labels: boxLabels(spec, owner), Annotations: boxAnnotations(spec, owner)},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			TerminationGracePeriodSeconds: &grace,
			InitContainers: []corev1.Container{{
				Name: initContainer, Image: e.cfg.AgentImage, ImagePullPolicy: corev1.PullPolicy(e.cfg.PullPolicy),
				Command:      []string{"/boxlite-guest", "--install", agentDir + "/boxlite-guest"},
				VolumeMounts: []corev1.VolumeMount{{Name: agentVolume, MountPath: agentDir}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: agentLimit},
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: agentLimit},
				},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
			Containers: []corev1.Container{{
				Name: boxContainer, Image: spec.Image, ImagePullPolicy: corev1.PullPolicy(e.cfg.PullPolicy),
				// The image's entrypoint is replaced by the agent; its env,
				// working directory and user stay (the runtime applies them).
				Command:      []string{agentDir + "/boxlite-guest", "--container", "--listen", fmt.Sprintf("tcp:127.0.0.1:%d", AgentPort)},
				Env:          env,
				Resources:    corev1.ResourceRequirements{Requests: limits, Limits: limits},
				VolumeMounts: []corev1.VolumeMount{{Name: agentVolume, MountPath: agentDir}},
				SecurityContext: &corev1.SecurityContext{
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
			}},
			Volumes: []corev1.Volume{{Name: agentVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &agentLimit}}}},
		},
	}
	if h := spec.Hostname(); len(validation.IsDNS1123Label(h)) == 0 {
		p.Spec.Hostname = h
	}
	if e.cfg.RuntimeClass != "" {
		rc := e.cfg.RuntimeClass
		p.Spec.RuntimeClassName = &rc
	}
	if e.cfg.StorageClass != "" {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "files", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claimName(spec)}}})
		p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "files", MountPath: filesMountPath})
	}
	return p
}

// claim is the PersistentVolumeClaim of a box's files.
func (e *Engine) claim(spec sandbox.Spec, owner string) *corev1.PersistentVolumeClaim {
	sc := e.cfg.StorageClass
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: claimName(spec), Namespace: e.ns, Labels: boxLabels(spec, owner), Annotations: boxAnnotations(spec, owner)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &sc,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: resource.MustParse(fmt.Sprintf("%dMi", max(spec.DiskMiB, sandbox.MinDiskMiB)))}},
		},
	}
}

// networkPolicy is the box's NetworkPolicy: no ingress ever (the agent is
// reached by port-forward, which no policy governs); egress nowhere
// (`network: false`), only to the allow list's addresses and ports, or
// (`network: true`) to public unicast addresses and DNS, as on the other
// engines: the ranges network.SpecialRanges names (the cluster's own pod
// and service networks, the node, the cloud metadata service) are
// excepted. Host names cannot be expressed in a NetworkPolicy: such an
// entry is an error.
func (e *Engine) networkPolicy(spec sandbox.Spec, owner string) (*netv1.NetworkPolicy, error) {
	np := &netv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "box-" + spec.ID, Namespace: e.ns, Labels: boxLabels(spec, owner)},
		Spec: netv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{labelID: spec.ID}},
			PolicyTypes: []netv1.PolicyType{netv1.PolicyTypeIngress, netv1.PolicyTypeEgress},
		},
	}
	if spec.Network && len(spec.NetworkAllow) == 0 {
		np.Spec.Egress = publicEgress()
		return np, nil
	}
	for _, entry := range spec.NetworkAllow {
		rule, err := egressRule(entry)
		if err != nil {
			return nil, err
		}
		np.Spec.Egress = append(np.Spec.Egress, rule)
	}
	return np, nil
}

// publicEgress allows public unicast addresses (every special range
// excepted) and DNS: the cluster's resolver lives at a service address of
// a private range, and a box with network resolves names through it.
func publicEgress() []netv1.NetworkPolicyEgressRule {
	v4 := &netv1.IPBlock{CIDR: "0.0.0.0/0"}
	v6 := &netv1.IPBlock{CIDR: "::/0"}
	for _, p := range network.SpecialRanges() {
		if p.Addr().Is4() {
			v4.Except = append(v4.Except, p.String())
		} else if p.Bits() > 0 {
			v6.Except = append(v6.Except, p.String())
		}
	}
	dns := intstr.FromInt32(53)
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	return []netv1.NetworkPolicyEgressRule{
		{To: []netv1.NetworkPolicyPeer{{IPBlock: v4}, {IPBlock: v6}}},
		{Ports: []netv1.NetworkPolicyPort{{Protocol: &udp, Port: &dns}, {Protocol: &tcp, Port: &dns}}},
	}
}

// egressRule turns an allow-list entry (network.ParsePolicy's forms:
// IP, CIDR, either with :port) into a NetworkPolicy egress rule.
func egressRule(entry string) (netv1.NetworkPolicyEgressRule, error) {
	host, port := entry, ""
	if h, p, err := net.SplitHostPort(entry); err == nil {
		host, port = h, p
	} else if i := strings.LastIndexByte(entry, ':'); i > 0 && strings.Count(entry, ":") == 1 {
		host, port = entry[:i], entry[i+1:]
	}
	cidr := host
	if ip := net.ParseIP(host); ip != nil {
		if ip.To4() != nil {
			cidr = host + "/32"
		} else {
			cidr = host + "/128"
		}
	} else if _, _, err := net.ParseCIDR(host); err != nil {
		return netv1.NetworkPolicyEgressRule{}, fmt.Errorf("network_allow entry %q: the k8s engine enforces the allow list with a NetworkPolicy, which takes IP addresses and CIDRs only (no host names)", entry)
	}
	rule := netv1.NetworkPolicyEgressRule{To: []netv1.NetworkPolicyPeer{{IPBlock: &netv1.IPBlock{CIDR: cidr}}}}
	if port != "" && port != "*" {
		n, err := strconv.Atoi(port)
		if err != nil {
			return rule, fmt.Errorf("network_allow entry %q: bad port", entry)
		}
		p := intstr.FromInt32(int32(n))
		for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
			rule.Ports = append(rule.Ports, netv1.NetworkPolicyPort{Protocol: &proto, Port: &p})
		}
	}
	return rule, nil
}

// boxFromObject reads a box's identity from its pod's or claim's metadata.
func boxFromObject(m metav1.ObjectMeta) (sandbox.Spec, string, bool) {
	var spec sandbox.Spec
	if m.Labels[labelManaged] != managedBy || m.Labels[labelID] == "" {
		return spec, "", false
	}
	if err := json.Unmarshal([]byte(m.Annotations[annotSpec]), &spec); err != nil {
		return spec, "", false
	}
	owner := m.Annotations[annotOwner]
	if ownerHash(owner) != m.Labels[labelOwner] {
		return spec, "", false // annotations edited behind our back: not ours to trust
	}
	spec.ID, spec.Name = m.Labels[labelID], m.Annotations[annotName]
	return spec, owner, true
}
