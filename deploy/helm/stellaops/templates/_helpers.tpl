{{/* Common labels. */}}
{{- define "stellaops.labels" -}}
app.kubernetes.io/part-of: stellaops-mirror
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "stellaops.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* Pods that read the mirror's configuration roll when it changes (a new ReplicaSet re-reads the ConfigMap). */}}
{{- define "stellaops.configChecksum" -}}
checksum/mirror-env: {{ toYaml .Values.env | sha256sum }}
{{- end -}}

{{/* Where the servers are reached in the release: the gateway proxies to them, and a server running one product
     asks the other's for its part of /status. Set by the chart (over the ConfigMap), as its Services decide it. */}}
{{- define "stellaops.upstreams" -}}
- name: MIRROR__GATEWAY__UPSTREAMS__CONCELIER
  value: stellaops-concelier:8080
- name: MIRROR__GATEWAY__UPSTREAMS__EXCITITOR
  value: stellaops-excititor:8080
{{- end -}}

{{/* persistence.sharing: how the sync CronJob (the only writer) and the servers (readers) share the export PVCs.
     ReadWriteMany: the volumes attach on any number of nodes, pods go anywhere. coSchedule: ReadWriteOnce volumes
     attach on one node only, so every pod that mounts them — the servers' replicas and the sync — is required on the
     node of the stellaops-concelier pods (podAffinity, topologyKey kubernetes.io/hostname). */}}
{{- define "stellaops.sharing" -}}
{{- $s := .Values.persistence.sharing -}}
{{- if not (has $s (list "ReadWriteMany" "coSchedule")) -}}
{{- fail (printf "persistence.sharing must be ReadWriteMany or coSchedule, not %v" $s) -}}
{{- end -}}
{{- $s -}}
{{- end -}}

{{/* The affinity that keeps a pod on the node of the export volumes (coSchedule only). */}}
{{- define "stellaops.coSchedule" -}}
{{- if eq (include "stellaops.sharing" .) "coSchedule" }}
affinity:
  podAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            app.kubernetes.io/name: {{ if .Values.concelier.enabled }}stellaops-concelier{{ else }}stellaops-excititor{{ end }}
{{- end }}
{{- end -}}
