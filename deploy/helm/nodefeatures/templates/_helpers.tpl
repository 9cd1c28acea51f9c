{{/* The namespace, ServiceAccount and names are fixed: the admission policy names the
agent's ServiceAccount, and one agent per node is all a cluster can run. */}}
{{- define "nodefeatures.namespace" -}}nodefeatures{{- end }}

{{/* Labels on every object: deploy/'s own, and those Helm's conventions add. */}}
{{- define "nodefeatures.labels" -}}
app.kubernetes.io/name: nodefeatures
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* The labels that send a node to the GPU DaemonSet: the NVIDIA PCI device labels,
and the administrator's opt-in for Jetson/IGX and WSL2 nodes
(deploy/gpu/daemonset-nvidia.yaml). */}}
{{- define "nodefeatures.gpuLabels" -}}
{{- list "feature.node.kubernetes.io/pci-10de.present" "feature.node.kubernetes.io/pci-0300_10de.present" "feature.node.kubernetes.io/pci-0302_10de.present" "node-restriction.kubernetes.io/nodefeatures-gpu-agent" | toJson }}
{{- end }}

{{/* One agent DaemonSet; deploy/base/daemonset.yaml and deploy/gpu/daemonset-nvidia.yaml
explain every field. Called with (dict "root" $ "name" ... "component" ... "gpu" bool). */}}
{{- define "nodefeatures.daemonset" -}}
{{- $root := .root -}}
{{- $values := $root.Values -}}
{{- $gpuLabels := include "nodefeatures.gpuLabels" $root | fromJsonArray -}}
{{- $gpu := .gpu -}}
{{- /* managedPrefixes narrows the base agent within the allowed label namespaces;
empty, it writes every allowed namespace. The GPU agent keeps to nvidia.com/, and the
base agent leaves it the nvidia source, not a prefix
(deploy/gpu/base-leaves-gpu-labels.yaml). */ -}}
{{- $prefixes := $values.managedPrefixes -}}
{{- if $gpu -}}
{{- $prefixes = list "nvidia.com/" -}}
{{- end -}}
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ .name }}
  namespace: {{ include "nodefeatures.namespace" $root }}
  labels:
    {{- include "nodefeatures.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: nodefeatures
      app.kubernetes.io/component: {{ .component }}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 10%
  template:
    metadata:
      labels:
        app.kubernetes.io/name: nodefeatures
        app.kubernetes.io/component: {{ .component }}
    spec:
      {{- if .gpu }}
      runtimeClassName: nvidia
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
              {{- range $gpuLabels }}
              - matchExpressions:
                  - key: {{ . }}
                    operator: In
                    values: ["true"]
              {{- end }}
      {{- end }}
      serviceAccountName: nodefeatures
      automountServiceAccountToken: true
      {{- with $values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      hostNetwork: false
      hostPID: false
      hostIPC: false
      enableServiceLinks: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: agent
          image: {{ printf "%s:%s" $values.image.repository ($values.image.tag | default $root.Chart.AppVersion) | quote }}
          imagePullPolicy: {{ $values.image.pullPolicy }}
          args:
            - run
            - --root=/host
            - --proc=/proc
            - --metrics-port=8080
            - --config=/etc/nodefeatures/config.yaml
            - {{ printf "--label-namespaces=%s/nodefeatures-label-namespaces" (include "nodefeatures.namespace" $root) }}
            {{- if .gpu }}
            {{- /* The GPU agent is instance "gpu": only the nvidia source, only nvidia.com/,
                   its own ledger (deploy/gpu/daemonset-nvidia.yaml). */}}
            - --instance=gpu
            - --source=nvidia
            {{- end }}
            {{- range $prefixes }}
            - {{ printf "--managed-prefix=%s" . | quote }}
            {{- end }}
            {{- if and $values.gpu.enabled (not .gpu) }}
            {{- /* The base agent stays on GPU nodes, leaves the nvidia source to the GPU
                   agent and says when it is missing
                   (deploy/gpu/base-leaves-gpu-labels.yaml). */}}
            - --skip-source=nvidia
            - --expect-instance=gpu
            {{- end }}
          env:
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            {{- if .gpu }}
            - name: NVIDIA_VISIBLE_DEVICES
              value: all
            - name: NVIDIA_DRIVER_CAPABILITIES
              value: utility
            {{- end }}
          ports:
            - name: http
              containerPort: 8080
              protocol: TCP
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            initialDelaySeconds: 10
            periodSeconds: 20
            timeoutSeconds: 5
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 3
          {{- with $values.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            privileged: false
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: host-root
              mountPath: /host
              readOnly: true
              recursiveReadOnly: IfPossible
            - name: hide-host-proc
              mountPath: /host/proc
              readOnly: true
            - name: hide-host-dev
              mountPath: /host/dev
              readOnly: true
            - name: config
              mountPath: /etc/nodefeatures
              readOnly: true
            {{- range $values.extraHostPaths }}
            - name: {{ printf "extra-%s" .name }}
              mountPath: {{ .mountPath | quote }}
              readOnly: true
              {{- if eq (.type | default "Directory") "Directory" }}
              recursiveReadOnly: IfPossible
              {{- end }}
            {{- end }}
      volumes:
        - name: host-root
          hostPath:
            path: /
            type: Directory
        - name: hide-host-proc
          emptyDir:
            sizeLimit: 1Mi
        - name: hide-host-dev
          emptyDir:
            sizeLimit: 1Mi
        - name: config
          configMap:
            name: nodefeatures-config
        {{- range $values.extraHostPaths }}
        - name: {{ printf "extra-%s" .name }}
          hostPath:
            path: {{ .path | quote }}
            type: {{ .type | default "Directory" }}
        {{- end }}
{{- end }}
