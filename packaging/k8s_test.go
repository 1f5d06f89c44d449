package packaging

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/ffrtmp/ffrtmp/cli"
)

// namespace is the manifests' namespace.
const namespace = "ffrtmp"

// serverStop is what a stopping server needs besides its drain: the
// requests in flight (cli's shutdownTimeout, 10 s) and a margin for the
// leadership transfer and Raft's shutdown.
const serverStop = 10*time.Second + 5*time.Second

// manifests holds every object of a set of manifest files, decoded
// strictly into the official API types.
type manifests struct {
	objects      []metav1.Object
	namespaces   map[string]*corev1.Namespace
	configMaps   map[string]*corev1.ConfigMap
	services     map[string]*corev1.Service
	statefulSets map[string]*appsv1.StatefulSet
	pdbs         map[string]*policyv1.PodDisruptionBudget
}

// loadManifests decodes every document of the *.yaml files in dirs. A
// field the API type does not have, a kind it does not know, or a
// duplicate object fails the test.
func loadManifests(t *testing.T, dirs ...string) *manifests {
	t.Helper()
	m := &manifests{
		namespaces: map[string]*corev1.Namespace{}, configMaps: map[string]*corev1.ConfigMap{},
		services: map[string]*corev1.Service{}, statefulSets: map[string]*appsv1.StatefulSet{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{},
	}
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no manifests in %s (%v)", dir, err)
		}
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			for i, doc := range splitYAML(b) {
				where := fmt.Sprintf("%s document %d", file, i+1)
				if err := m.add(doc); err != nil {
					t.Errorf("%s: %v", where, err)
				}
			}
		}
	}
	return m
}

// splitYAML splits a multi-document YAML file, dropping documents that
// hold only comments.
func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		empty := true
		for _, line := range strings.Split(d, "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				empty = false
			}
		}
		if !empty {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func (m *manifests) add(doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	var obj metav1.Object
	var put func()
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Namespace":
		o := &corev1.Namespace{}
		obj, put = o, func() { m.namespaces[o.Name] = o }
	case "v1 ConfigMap":
		o := &corev1.ConfigMap{}
		obj, put = o, func() { m.configMaps[o.Name] = o }
	case "v1 Service":
		o := &corev1.Service{}
		obj, put = o, func() { m.services[o.Name] = o }
	case "apps/v1 StatefulSet":
		o := &appsv1.StatefulSet{}
		obj, put = o, func() { m.statefulSets[o.Name] = o }
	case "policy/v1 PodDisruptionBudget":
		o := &policyv1.PodDisruptionBudget{}
		obj, put = o, func() { m.pdbs[o.Name] = o }
	default:
		return fmt.Errorf("kind %q of %q: not one these manifests use", tm.Kind, tm.APIVersion)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return fmt.Errorf("%s: %w", tm.Kind, err)
	}
	for _, o := range m.objects {
		if o.GetName() == obj.GetName() && fmt.Sprintf("%T", o) == fmt.Sprintf("%T", obj) {
			return fmt.Errorf("%s %s defined twice", tm.Kind, obj.GetName())
		}
	}
	if tm.Kind != "Namespace" && obj.GetNamespace() != namespace {
		return fmt.Errorf("%s %s: namespace %q, want %q", tm.Kind, obj.GetName(), obj.GetNamespace(), namespace)
	}
	m.objects = append(m.objects, obj)
	put()
	return nil
}

// statefulSet returns the named StatefulSet or fails the test.
func (m *manifests) statefulSet(t *testing.T, name string) *appsv1.StatefulSet {
	t.Helper()
	s := m.statefulSets[name]
	if s == nil {
		t.Fatalf("no StatefulSet %s", name)
	}
	return s
}

// podEnv is a pod's environment as the kubelet gives it to a container:
// its ConfigMaps' data, then its env entries (downward API values and
// Secret keys get sample values). $(VAR) references are expanded.
func (m *manifests) podEnv(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm := m.configMaps[from.ConfigMapRef.Name]
			if cm == nil {
				t.Fatalf("container %s: no ConfigMap %s", c.Name, from.ConfigMapRef.Name)
			}
			for k, v := range cm.Data {
				env[k] = v
			}
		case from.SecretRef != nil && !isTrue(from.SecretRef.Optional):
			t.Errorf("container %s: Secret %s in envFrom must be optional", c.Name, from.SecretRef.Name)
		}
	}
	samples := map[string]string{"metadata.name": "pod-0", "status.podIP": "10.0.0.7"}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			env[e.Name] = samples[e.ValueFrom.FieldRef.FieldPath]
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "sample-" + e.ValueFrom.SecretKeyRef.Key
		}
	}
	return env
}

func isTrue(b *bool) bool { return b != nil && *b }

// expand replaces $(VAR) as the kubelet does in args.
func expand(s string, env map[string]string) string {
	return regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).ReplaceAllStringFunc(s, func(ref string) string {
		if v, ok := env[ref[2:len(ref)-1]]; ok {
			return v
		}
		return ref
	})
}

// checkArgs proves that the ffrtmp binary's flag parser takes the
// container's command line with its environment (FFRTMP_* variables are
// flags too). It sets the environment of the test process, so the tests
// that call it are not parallel.
func checkArgs(t *testing.T, what string, args []string, env map[string]string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "FFRTMP_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	for k, v := range env {
		if strings.HasPrefix(k, "FFRTMP_") {
			t.Setenv(k, v)
		}
	}
	if err := cli.CheckArgs(args); err != nil {
		t.Errorf("%s: the binary refuses its command line: %v", what, err)
	}
}

// flagValue returns the value of --name in args ("" if absent).
func flagValue(args []string, name string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// container returns the one container of a StatefulSet's pods.
func container(t *testing.T, s *appsv1.StatefulSet) corev1.Container {
	t.Helper()
	if n := len(s.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("StatefulSet %s has %d containers, want 1", s.Name, n)
	}
	return s.Spec.Template.Spec.Containers[0]
}

// TestKubernetesManifests decodes every manifest strictly into the
// Kubernetes API types and checks what the cluster depends on: three
// servers with stable identities and volumes, a Raft bootstrap through the
// headless names, probes, a disruption budget that keeps quorum, secrets
// for keys and tokens, a grace period that covers the drain, and command
// lines the binary takes.
func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t, "k8s")
	if m.namespaces[namespace] == nil {
		t.Fatalf("no Namespace %s", namespace)
	}
	srv := m.statefulSet(t, "ffrtmp-server")
	spec := srv.Spec
	if spec.Replicas == nil || *spec.Replicas != 3 {
		t.Errorf("server replicas %v, want 3", spec.Replicas)
	}
	if spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("server podManagementPolicy %q, want Parallel: no server is ready before all have formed the cluster", spec.PodManagementPolicy)
	}
	checkSelector(t, "StatefulSet ffrtmp-server", spec.Selector, spec.Template.Labels)

	// Raft: a headless Service that publishes pods before they are ready.
	raft := m.services[spec.ServiceName]
	if raft == nil || raft.Spec.ClusterIP != corev1.ClusterIPNone || !raft.Spec.PublishNotReadyAddresses {
		t.Fatalf("serviceName %q: want a headless Service with publishNotReadyAddresses", spec.ServiceName)
	}
	checkServiceSelects(t, raft, spec.Template.Labels)

	c := container(t, srv)
	env := m.podEnv(t, c)
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = expand(a, env)
	}
	if len(c.Command) != 0 || len(args) == 0 || args[0] != "server" {
		t.Fatalf("server container: command %q args %q, want the image's entrypoint with args server ...", c.Command, c.Args)
	}
	checkArgs(t, "server", args, env)
	if got := flagValue(args, "bootstrap-expect"); got != "3" {
		t.Errorf("--bootstrap-expect %q, want 3", got)
	}
	var wantJoin []string
	for i := range *spec.Replicas {
		wantJoin = append(wantJoin, fmt.Sprintf("%s-%d.%s.%s.svc.cluster.local:7071", srv.Name, i, raft.Name, namespace))
	}
	if got := flagValue(args, "join"); got != strings.Join(wantJoin, ",") {
		t.Errorf("--join %q, want the headless names %q", got, strings.Join(wantJoin, ","))
	}
	if got := flagValue(args, "node-id"); got != "pod-0" {
		t.Errorf("--node-id %q, want the pod name", got)
	}

	// Storage: the data dir is a volume claim template.
	dataDir := flagValue(args, "data-dir")
	if !mountsClaim(spec, c, dataDir) {
		t.Errorf("--data-dir %s is not on a volumeClaimTemplate", dataDir)
	}

	// Probes.
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/ready" {
		t.Errorf("server readiness probe %+v, want GET /ready", p)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/health" {
		t.Errorf("server liveness probe %+v, want GET /health", p)
	}

	// The cluster key comes from a Secret.
	keyFile := flagValue(args, "cluster-key-file")
	if name := secretAt(spec.Template.Spec, c, keyFile); name == "" {
		t.Errorf("--cluster-key-file %s is not in a Secret volume", keyFile)
	}

	// Stopping: preStop sleep, then the drain, then requests in flight,
	// all within the grace period.
	drain, err := time.ParseDuration(env["FFRTMP_DRAIN"])
	if err != nil {
		t.Fatalf("FFRTMP_DRAIN %q in the server ConfigMap: %v", env["FFRTMP_DRAIN"], err)
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Fatal("server container: no preStop sleep")
	}
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	grace := time.Duration(*spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	if need := preStop + drain + serverStop; grace < need {
		t.Errorf("terminationGracePeriodSeconds %s < preStop %s + drain %s + %s", grace, preStop, drain, serverStop)
	}

	// Clients: a LoadBalancer on the API port of ready servers.
	api := m.services["ffrtmp-api"]
	if api == nil || api.Spec.Type != corev1.ServiceTypeLoadBalancer {
		t.Fatal("no LoadBalancer Service ffrtmp-api")
	}
	checkServiceSelects(t, api, spec.Template.Labels)
	if len(api.Spec.Ports) != 1 || !containerPort(c, api.Spec.Ports[0].TargetPort, 7070) || flagValue(args, "http-addr") != "0.0.0.0:7070" {
		t.Errorf("ffrtmp-api ports %+v do not reach the API (--http-addr %s)", api.Spec.Ports, flagValue(args, "http-addr"))
	}

	// Quorum under voluntary disruption.
	pdb := m.pdbs["ffrtmp-server"]
	if pdb == nil || pdb.Spec.MinAvailable == nil || *pdb.Spec.MinAvailable != intstr.FromInt32(2) {
		t.Fatalf("PodDisruptionBudget ffrtmp-server: want minAvailable 2")
	}
	if sel, _ := metav1.LabelSelectorAsSelector(pdb.Spec.Selector); !sel.Matches(labelSet(spec.Template.Labels)) {
		t.Error("the PodDisruptionBudget does not select the servers")
	}

	checkWorker(t, m, "ffrtmp-worker", false)
	checkWorker(t, m, "ffrtmp-worker-gpu", true)
	for _, s := range m.statefulSets {
		checkHardened(t, s)
	}
}

// checkWorker checks a worker StatefulSet: its token is its pod's key in
// a Secret, the CA hash comes from that Secret, its identity is on a
// volume, and the binary takes its command line.
func checkWorker(t *testing.T, m *manifests, name string, gpu bool) {
	t.Helper()
	s := m.statefulSet(t, name)
	checkSelector(t, "StatefulSet "+name, s.Spec.Selector, s.Spec.Template.Labels)
	if svc := m.services[s.Spec.ServiceName]; svc == nil {
		t.Errorf("%s: no Service %s", name, s.Spec.ServiceName)
	} else {
		checkServiceSelects(t, svc, s.Spec.Template.Labels)
	}
	c := container(t, s)
	env := m.podEnv(t, c)
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = expand(a, env)
	}
	if len(args) == 0 || args[0] != "worker" {
		t.Fatalf("%s: args %q, want worker ...", name, c.Args)
	}
	checkArgs(t, name, args, env)
	if !strings.HasSuffix(c.Args[slices.IndexFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--token-file=") })], "/$(POD_NAME)") {
		t.Errorf("%s: --token-file must name the pod's own token", name)
	}
	tokenFile := flagValue(args, "token-file")
	tokens := secretAt(s.Spec.Template.Spec, c, tokenFile)
	if tokens == "" {
		t.Errorf("%s: --token-file %s is not in a Secret volume", name, tokenFile)
	}
	caHash := false
	for _, e := range c.Env {
		caHash = caHash || (e.Name == "FFRTMP_CA_HASH" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == tokens)
	}
	if !caHash {
		t.Errorf("%s: FFRTMP_CA_HASH must come from the tokens' Secret %q", name, tokens)
	}
	if !mountsClaim(s.Spec, c, flagValue(args, "data-dir")) {
		t.Errorf("%s: --data-dir (the worker ID) is not on a volumeClaimTemplate", name)
	}
	_, hasGPU := c.Resources.Limits["nvidia.com/gpu"]
	if hasGPU != gpu {
		t.Errorf("%s: nvidia.com/gpu limit %v, want %v", name, hasGPU, gpu)
	}
}

// checkHardened checks that a pod runs unprivileged with bounded memory.
func checkHardened(t *testing.T, s *appsv1.StatefulSet) {
	t.Helper()
	ps := s.Spec.Template.Spec
	if ps.SecurityContext == nil || !isTrue(ps.SecurityContext.RunAsNonRoot) {
		t.Errorf("%s: pods must run as non-root", s.Name)
	}
	for _, c := range ps.Containers {
		if c.Image == "" || c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s/%s: want an image, a CPU request and a memory limit", s.Name, c.Name)
		}
		if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s/%s: want allowPrivilegeEscalation false and all capabilities dropped", s.Name, c.Name)
		}
	}
}

type labelSet map[string]string

func (l labelSet) Has(k string) bool   { _, ok := l[k]; return ok }
func (l labelSet) Get(k string) string { return l[k] }
func (l labelSet) Lookup(k string) (string, bool) {
	v, ok := l[k]
	return v, ok
}

func checkSelector(t *testing.T, what string, sel *metav1.LabelSelector, labels map[string]string) {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || s.Empty() || !s.Matches(labelSet(labels)) {
		t.Errorf("%s: selector %v does not select its pod template (%v)", what, sel, err)
	}
}

func checkServiceSelects(t *testing.T, svc *corev1.Service, labels map[string]string) {
	t.Helper()
	if len(svc.Spec.Selector) == 0 {
		t.Errorf("Service %s has no selector", svc.Name)
	}
	for k, v := range svc.Spec.Selector {
		if labels[k] != v {
			t.Errorf("Service %s selects %s=%s, which its pods do not have", svc.Name, k, v)
		}
	}
}

// mountsClaim reports whether path is at or under the mount of one of the
// StatefulSet's volumeClaimTemplates.
func mountsClaim(spec appsv1.StatefulSetSpec, c corev1.Container, path string) bool {
	for _, vm := range c.VolumeMounts {
		if path == "" || !strings.HasPrefix(path+"/", strings.TrimSuffix(vm.MountPath, "/")+"/") {
			continue
		}
		for _, pvc := range spec.VolumeClaimTemplates {
			if pvc.Name == vm.Name {
				return true
			}
		}
	}
	return false
}

// secretAt returns the Secret whose volume holds the file at path, or "".
func secretAt(ps corev1.PodSpec, c corev1.Container, path string) string {
	for _, vm := range c.VolumeMounts {
		if filepath.Dir(path) != filepath.Clean(vm.MountPath) {
			continue
		}
		for _, v := range ps.Volumes {
			if v.Name == vm.Name && v.Secret != nil {
				return v.Secret.SecretName
			}
		}
	}
	return ""
}

// containerPort reports whether target names or numbers the container's
// port number want.
func containerPort(c corev1.Container, target intstr.IntOrString, want int32) bool {
	for _, p := range c.Ports {
		if p.ContainerPort == want && (target.StrVal == p.Name || target.IntVal == want) {
			return true
		}
	}
	return false
}

// TestKubernetesPostgresVariant checks the PostgreSQL variant, applied
// together with the bolt variant's files: a PostgreSQL StatefulSet on its
// own volume whose password is a Secret, and servers that take the store
// URL from an optional Secret, so that the bolt variant needs none.
func TestKubernetesPostgresVariant(t *testing.T) {
	m := loadManifests(t, "k8s", filepath.Join("k8s", "postgres"))
	pg := m.statefulSet(t, "ffrtmp-postgres")
	if pg.Spec.Replicas == nil || *pg.Spec.Replicas != 1 || len(pg.Spec.VolumeClaimTemplates) == 0 {
		t.Error("ffrtmp-postgres: want one replica on a volumeClaimTemplate")
	}
	c := container(t, pg)
	password := false
	for _, e := range c.Env {
		password = password || (e.Name == "POSTGRES_PASSWORD" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil)
	}
	if !password {
		t.Error("ffrtmp-postgres: POSTGRES_PASSWORD must come from a Secret")
	}
	if svc := m.services[pg.Spec.ServiceName]; svc == nil {
		t.Errorf("no Service %s", pg.Spec.ServiceName)
	} else {
		checkServiceSelects(t, svc, pg.Spec.Template.Labels)
	}
	srv := container(t, m.statefulSet(t, "ffrtmp-server"))
	store := false
	for _, from := range srv.EnvFrom {
		store = store || (from.SecretRef != nil && from.SecretRef.Name == "ffrtmp-store" && isTrue(from.SecretRef.Optional))
	}
	if !store {
		t.Error("ffrtmp-server: want FFRTMP_STORE from the optional Secret ffrtmp-store")
	}
	checkHardened(t, pg)
}

// TestDockerfileContext checks that the image build's context (the
// Dockerfile's .dockerignore) holds every package the binary is built
// from.
func TestDockerfileContext(t *testing.T) {
	ignore, err := os.ReadFile(filepath.Join("docker", "Dockerfile.dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	dockerfile, err := os.ReadFile(filepath.Join("docker", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CGO_ENABLED=0", "FROM gcr.io/distroless/static", " AS worker", "ffmpeg", "USER 65532"} {
		if !bytes.Contains(dockerfile, []byte(want)) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	allowed := map[string]bool{}
	for _, line := range strings.Split(string(ignore), "\n") {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "!"); ok {
			allowed[strings.TrimSuffix(p, "/")] = true
		}
	}
	// Every directory of the module with non-test Go files the binary
	// could import: all but packaging and testdata.
	entries, err := os.ReadDir("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == "packaging" || e.Name() == "testdata" || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		goFiles := false
		filepath.WalkDir(filepath.Join("..", e.Name()), func(p string, d os.DirEntry, err error) error {
			goFiles = goFiles || (err == nil && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go"))
			return nil
		})
		if goFiles && !allowed[e.Name()] {
			t.Errorf("packaging/docker/Dockerfile.dockerignore leaves out %s/, which the binary is built from", e.Name())
		}
	}
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		if !allowed[f] {
			t.Errorf("Dockerfile.dockerignore leaves out %s", f)
		}
	}
}
