# FCN R50-D8 on gsg-zoo's built-in synthetic dataset (see _base_/synthetic.py): a smoke-test scale
# recipe, BN, 1 process. `gsg transfer segmentation` sets the class names and the backbone checkpoint.
_base_ = ["mmseg::_base_/models/fcn_r50-d8.py", "mmseg::_base_/default_runtime.py", "./_base_/synthetic.py"]

num_classes = 4  # replaced from the dataset's class list by the runner
norm_cfg = dict(type="BN", requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(64, 64)),
    pretrained=None,
    backbone=dict(
        type="ResNet", depth=50, norm_cfg=norm_cfg, init_cfg=dict(type="Pretrained", checkpoint=None)
    ),
    decode_head=dict(num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=dict(num_classes=num_classes, norm_cfg=norm_cfg),
)
