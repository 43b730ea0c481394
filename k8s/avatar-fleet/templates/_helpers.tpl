{{- define "avatar.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "avatar.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* selector labels of one component: (dict "ctx" $ "component" "router") */}}
{{- define "avatar.selector" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "avatar.image" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}

{{- define "avatar.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "avatar.fullname" .) -}}
{{- else -}}
{{- required "redis.url is required when redis.enabled is false" .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{- define "avatar.livekitInternalUrl" -}}
{{- if .Values.livekit.internalUrl -}}
{{- .Values.livekit.internalUrl -}}
{{- else -}}
{{- printf "ws://%s-livekit:7880" (include "avatar.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "avatar.regionsSecret" -}}
{{- default (printf "%s-regions" (include "avatar.fullname" .)) .Values.regions.existingSecret -}}
{{- end -}}

{{/* the region entry named .name from .ctx.Values.regions.list */}}
{{- define "avatar.region" -}}
{{- $found := dict -}}
{{- range .ctx.Values.regions.list -}}
{{- if eq .name $.name -}}{{- $found = . -}}{{- end -}}
{{- end -}}
{{- if not $found -}}{{- fail (printf "region %q is not in regions.list" .name) -}}{{- end -}}
{{- toJson $found -}}
{{- end -}}

{{/* the settings every fleet process shares, as env entries */}}
{{- define "avatar.commonEnv" -}}
- name: AVATAR_REDIS_URL
  value: {{ include "avatar.redisUrl" . | quote }}
- name: AVATAR_REDIS_CLUSTER
  value: {{ .Values.redis.cluster | quote }}
- name: AVATAR_REGIONS_FILE
  value: /etc/avatar/regions.yaml
- name: AVATAR_LOG_FORMAT
  value: json
- name: AVATAR_WORKER__HEARTBEAT_TTL_S
  value: {{ .Values.worker.heartbeatTtlS | quote }}
{{- end -}}

{{- define "avatar.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "avatar.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* the Secret holding the workers' router key (key: worker-key) */}}
{{- define "avatar.workerKeySecret" -}}
{{- default (printf "%s-worker-key" (include "avatar.fullname" .)) .Values.avatars.existingSecret -}}
{{- end -}}
