# pri: data-free model inversion of Vision Transformers (DMI, SMI, PRI), end to end.
#
#   snakemake --cores all                                              the embedded default (CPU, minutes)
#   snakemake --configfile config/paper.yaml --profile workflow/profiles/slurm   paper scale
#   snakemake --report report.html                                     the report of a finished run
import os

from snakemake.utils import min_version

min_version("9.0")

# The default configuration is read only when no --configfile names another one, so that a
# paper-scale config is not merged with the default's teachers.
if "teachers" not in config:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


from pri.workflow.config import ConfigError, checked

try:  # the schema's checks (one line per problem, naming the key) and its documented defaults
    checked(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))
except ConfigError as e:
    raise WorkflowError(e.message)


include: "workflow/rules/common.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/invert.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/quantize.smk"
include: "workflow/rules/efficiency.smk"
include: "workflow/rules/analysis.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        rules.analysis.output.claims,
    default_target: True
