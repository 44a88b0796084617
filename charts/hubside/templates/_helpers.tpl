{{/* Names are cut to 40 characters so "<fullname>-usage-collector" stays within 63. */}}
{{- define "hubside.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hubside.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hubside.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "hubside.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hubside
{{- end -}}

{{/* Called with (dict "root" $ "svc" $svc). */}}
{{- define "hubside.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hubside.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .svc }}
{{- end -}}

{{- define "hubside.componentLabels" -}}
{{ include "hubside.labels" .root }}
app.kubernetes.io/component: {{ .svc }}
{{- end -}}

{{- define "hubside.serviceFullname" -}}
{{- printf "%s-%s" (include "hubside.fullname" .root) .svc -}}
{{- end -}}

{{- define "hubside.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hubside.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "hubside.configMapName" -}}
{{- default (printf "%s-config" (include "hubside.fullname" .)) .Values.existingConfigMap -}}
{{- end -}}

{{- define "hubside.hasDatabase" -}}
{{- if or .Values.database.existingSecret .Values.database.url -}}true{{- end -}}
{{- end -}}

{{- define "hubside.databaseSecretName" -}}
{{- default (printf "%s-database" (include "hubside.fullname" .)) .Values.database.existingSecret -}}
{{- end -}}

{{/* The route prefix JupyterHub gives the service: <baseUrl>services/<hubServiceName>/. */}}
{{- define "hubside.prefix" -}}
{{- $base := .root.Values.hub.baseUrl | default "/" -}}
{{- if not (hasSuffix "/" $base) -}}{{- $base = printf "%s/" $base -}}{{- end -}}
{{- printf "%sservices/%s/" $base .cfg.hubServiceName -}}
{{- end -}}

{{- define "hubside.image" -}}
{{- $img := .cfg.image | default dict -}}
{{- $tag := $img.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- $repo := $img.repository | default (printf "%s/%s/%s" .root.Values.image.registry .root.Values.image.namespace .svc) -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* Replicas above one, or an autoscaler, need PostgreSQL: an embedded PGlite lives in one pod. */}}
{{- define "hubside.checkReplicas" -}}
{{- if and (not (include "hubside.hasDatabase" .root)) (or (gt (int .cfg.replicas) 1) .cfg.autoscaling.enabled) -}}
{{- fail (printf "services.%s: more than one replica (replicas: %v, autoscaling.enabled: %v) needs database.existingSecret or database.url; the embedded PGlite database cannot be shared between pods%s" .svc .cfg.replicas .cfg.autoscaling.enabled (ternary ", and the usage-collector's single-poller lock lives in PostgreSQL" "" (eq .svc "usage-collector"))) -}}
{{- end -}}
{{- end -}}
